//! `steward run`'s start-up: builds the ports the config names and calls [`super::run`] (or
//! [`super::fleet::execute`] for a `[fleet]`). The binary parses its flags into
//! [`RunOptions`] and calls [`execute`].
//!
//! What it is: the wiring: the runtime (real time for real platforms; paused, auto-advancing
//! tokio time for the simulated one, so a simulated hour passes in seconds and every run of the
//! same config prints the same decisions), the platform, Patroni, Prometheus, the journal, the
//! decision log, the stop signals.
//!
//! What it is not: a loop or a policy; nothing here decides.

use std::sync::Arc;

use anyhow::{bail, Context};
use steward_adapters::lease::LeaseBackend;
use steward_adapters::patroni::{PatroniApi, PatroniClient};
use steward_adapters::platform::docker::DockerPlatform;
use steward_adapters::platform::kubernetes::client::KubeApi;
use steward_adapters::platform::kubernetes::KubernetesPlatform;
use steward_adapters::prometheus::PrometheusClient;
use steward_model::ports::metrics::MetricsSource;
use steward_model::ports::Platform;
use steward_model::Timestamp;
use tracing::info;

use super::actions::ActionLog;
use super::config::PlatformSettings;
use super::journal::{
    CrashPoint, CrashingJournal, LoopJournal, MemoryJournal, StateJournal, CRASH_AT_ENV,
};
use super::options::{runtime, RunOptions, ACTIONS_FILE};
use super::sim::SimWorld;
use super::{run, shutdown_channel, Clock, Options, Ports, Telemetry};
use crate::config::Config;

/// The ports a platform setting builds, and the clock's start.
struct Built {
    platform: Arc<dyn Platform>,
    patroni: Arc<dyn PatroniApi>,
    start: Timestamp,
    /// The simulation, when the platform is simulated (its fault script is played).
    world: Option<Arc<SimWorld>>,
    /// The Kubernetes API connection, when the platform is Kubernetes (a Kubernetes Lease
    /// shares it).
    kube: Option<KubeApi>,
}

/// Runs `steward run` to its end.
pub fn execute(args: &RunOptions, config: Config) -> anyhow::Result<()> {
    if let Some(fleet) = config.fleet.clone() {
        // `[fleet]`: many clusters, one run each (fleet.rs).
        return super::fleet::execute(args, config, fleet);
    }
    let Some(platform) = config.platform.clone() else {
        bail!(
            "{} has no [platform] section: `steward run` needs to know where the members live \
             (kind = \"simulated\" | \"docker\" | \"libvirt\" | \"kubernetes\")",
            args.config.display()
        );
    };
    let simulated = matches!(platform, PlatformSettings::Simulated(_));
    let leased = config.lease.is_some() && !args.dry_run;
    let runtime = runtime(simulated && !leased)?;
    runtime.block_on(async_main(args, config, platform))
}

async fn async_main(
    args: &RunOptions,
    config: Config,
    platform: PlatformSettings,
) -> anyhow::Result<()> {
    let (trigger, shutdown) = shutdown_channel();
    // Stops the HTTP server once the loops have stopped.
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop_server = cancel.clone().drop_guard();
    let Built {
        platform: platform_port,
        patroni,
        start,
        world,
        kube,
    } = match &platform {
        PlatformSettings::Simulated(s) => {
            // A relative trace path is relative to the config file, as a reader expects.
            let trace = s.trace.as_ref().map(|p| match args.config.parent() {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p.clone(),
            });
            let text = match &trace {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading the load trace {}", path.display()))?,
                ),
                None => None,
            };
            let world = Arc::new(SimWorld::build(&config.cluster.name, s, text.as_deref()).await?);
            Built {
                platform: Arc::clone(&world.platform) as Arc<dyn Platform>,
                patroni: Arc::clone(&world.patroni) as Arc<dyn PatroniApi>,
                start: s.start,
                world: Some(world),
                kube: None,
            }
        }
        other => {
            let patroni = config.patroni.as_ref().context(
                "a [patroni] section is required with a real platform (where is patroni's REST API?)",
            )?;
            // The command's edge: the one place `run` reads the wall clock.
            let now = Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
            let client = PatroniClient::with_seed(patroni, now.as_millis() as u64)
                .context("setting up the patroni client")?;
            let mut kube = None;
            let platform: Arc<dyn Platform> = match other {
                PlatformSettings::Docker(c) => Arc::new(
                    DockerPlatform::connect((**c).clone())
                        .await
                        .context("connecting to docker")?,
                ),
                PlatformSettings::Libvirt(c) => libvirt_platform(c, now).await?,
                PlatformSettings::Kubernetes(c) => {
                    let api =
                        KubeApi::connect(c.kubeconfig(), c.context(), c.max_body_bytes(), |k| {
                            std::env::var(k).ok()
                        })
                        .await
                        .context("setting up the kubernetes client ([platform.kubernetes])")?;
                    info!(source = %api.source(), "kubernetes client configured");
                    kube = Some(api.clone());
                    Arc::new(KubernetesPlatform::on(&api, c.clone()))
                }
                PlatformSettings::Simulated(_) => unreachable!("handled above"),
            };
            Built {
                platform,
                patroni: Arc::new(client),
                start: now,
                world: None,
                kube,
            }
        }
    };
    let clock = Clock::starting_at(start);
    let mut metrics: Vec<Arc<dyn MetricsSource>> = Vec::new();
    if let Some(p) = &config.prometheus {
        metrics.push(Arc::new(
            PrometheusClient::new(p).context("setting up the prometheus client")?,
        ));
    }
    let journal: Arc<dyn LoopJournal> = if args.dry_run {
        // A dry run journals nothing; it still reads nothing from a real journal either.
        Arc::new(MemoryJournal::default())
    } else {
        let journal: Arc<dyn LoopJournal> = Arc::new(
            StateJournal::open(&config.cluster.state_dir, &config.cluster.name)
                .context("opening the journal")?,
        );
        match std::env::var(CRASH_AT_ENV) {
            Ok(spec) => {
                let point: CrashPoint = spec
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{CRASH_AT_ENV}: {e}"))?;
                tracing::warn!(crash_at = %spec, "test fault injection armed: this process will abort");
                Arc::new(CrashingJournal::new(journal, point))
            }
            Err(_) => journal,
        }
    };
    let json_path = args
        .decision_log
        .clone()
        .or_else(|| (!args.dry_run).then(|| config.cluster.state_dir.join(ACTIONS_FILE)));
    let json: Option<Box<dyn std::io::Write + Send>> = match &json_path {
        Some(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the decision log {}", path.display()))?,
        )),
        None => None,
    };
    let mut decisions = ActionLog::new(json);
    if !args.quiet {
        decisions = decisions.with_human(Box::new(std::io::stdout()), start);
    }
    if let Some(world) = &world {
        tokio::spawn(Arc::clone(world).play());
    }
    if !args.quiet {
        let mode = if args.dry_run {
            "dry run: observes and decides, executes nothing"
        } else if config.lease.is_some() {
            "elected: stands by until it holds the lease, acts only while it does"
        } else {
            "acting"
        };
        let time = match (&world, args.run_for) {
            (Some(_), Some(d)) => {
                format!(", for {} of simulated time", humantime::format_duration(d))
            }
            (Some(_), None) => ", in simulated time".to_string(),
            (None, Some(d)) => format!(", for {}", humantime::format_duration(d)),
            (None, None) => String::new(),
        };
        println!(
            "# steward run: cluster {} on the {} platform, {mode}{time}",
            config.cluster.name,
            platform_port.kind()
        );
    }
    let telemetry = match &config.server {
        Some(server) => Some(serve(server, &config, args.dry_run, &cancel).await?),
        None => None,
    };
    let ports = Ports {
        platform: platform_port,
        patroni,
        metrics,
        balancers: config.balancers.as_ref().map(super::balancers::build),
        guard: None,
        journal,
        decisions,
        telemetry,
    };
    if let Some(d) = args.run_for {
        let stop = trigger;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => info!("--for elapsed: stopping"),
                r = signals_only() => if let Err(e) = r { tracing::warn!(error = %e, "cannot listen for signals") },
            }
            stop.trigger();
        });
    } else {
        tokio::spawn(async move {
            if let Err(e) = super::on_signals(trigger).await {
                tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGINT");
            }
        });
    }
    let options = Options {
        dry_run: args.dry_run,
        clock,
    };
    match &config.lease {
        // Several instances: standby until elected, acting while elected (lease.rs).
        Some(lease) if !args.dry_run => {
            let leadership: Arc<dyn steward_adapters::lease::Leadership> = match &lease.backend {
                LeaseBackend::Etcd => {
                    let Some(etcd) = super::lease::connect_patiently(lease, &shutdown).await?
                    else {
                        info!("stopped before etcd could be reached");
                        return Ok(());
                    };
                    Arc::new(etcd.leadership())
                }
                LeaseBackend::Kubernetes { .. } => {
                    let platform_namespace = match &platform {
                        PlatformSettings::Kubernetes(c) => Some(c.namespace()),
                        _ => None,
                    };
                    super::lease::kubernetes_leadership(
                        lease,
                        kube.clone(),
                        platform_namespace,
                        clock,
                    )
                    .await?
                }
            };
            // A standby's lines go to the terminal only: the actions file lists what was done.
            let mut standby_decisions = ActionLog::new(None);
            if !args.quiet {
                standby_decisions =
                    standby_decisions.with_human(Box::new(std::io::stdout()), start);
            }
            let ports = super::lease::ElectedPorts {
                acting: ports,
                standby_decisions,
            };
            super::lease::run_elected(&config, leadership, &lease.instance, ports, clock, shutdown)
                .await
        }
        Some(_) => {
            info!("dry run: the lease is not campaigned for (a dry run never acts)");
            run(&config, ports, options, shutdown).await
        }
        None => run(&config, ports, options, shutdown).await,
    }
}

/// Starts the HTTP API of `[server]` and returns what the loops publish into.
async fn serve(
    server: &crate::server::ServerConfig,
    config: &Config,
    dry_run: bool,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Telemetry> {
    let token = server
        .load_token(|k| std::env::var(k).ok())
        .context("loading the api token")?;
    let metrics = Arc::new(crate::telemetry::Metrics::new());
    let telemetry = cluster_telemetry(server, token, metrics, config, dry_run)?;
    let listener = crate::server::bind(server).await?;
    tokio::spawn(crate::server::serve(
        listener,
        telemetry.server.clone(),
        cancel.clone(),
    ));
    Ok(telemetry)
}

/// What one cluster's loops publish into: its state on the HTTP surface, counting into
/// `metrics` (a fleet's clusters share one registry), and, unless a dry run, its policy
/// decision log in its state directory.
pub(super) fn cluster_telemetry(
    server: &crate::server::ServerConfig,
    token: Option<crate::server::BearerToken>,
    metrics: Arc<crate::telemetry::Metrics>,
    config: &Config,
    dry_run: bool,
) -> anyhow::Result<Telemetry> {
    let state_dir = &config.cluster.state_dir;
    let shared = crate::server::Shared::new(
        config.cluster.name.clone(),
        server,
        token,
        metrics,
        crate::telemetry::Loop::ALL.to_vec(),
    );
    let policy_log = if dry_run {
        None
    } else {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
        Some(Arc::new(
            crate::telemetry::DecisionLog::open(state_dir).context("opening the decision log")?,
        ))
    };
    Ok(Telemetry {
        server: shared,
        policy_log,
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn signals_only() -> std::io::Result<()> {
    let (t, mut s) = shutdown_channel();
    let listen = super::on_signals(t);
    tokio::select! {
        r = listen => r,
        _ = s.wait() => Ok(()),
    }
}

/// The libvirt platform, in a build with the `libvirt` feature.
#[cfg(feature = "libvirt")]
async fn libvirt_platform(
    config: &steward_adapters::platform::libvirt::LibvirtConfig,
    now: Timestamp,
) -> anyhow::Result<Arc<dyn Platform>> {
    use steward_adapters::platform::libvirt::{Clock, LibvirtPlatform};
    let origin = tokio::time::Instant::now();
    let clock: Clock = Arc::new(move || now + origin.elapsed());
    let platform = LibvirtPlatform::connect(config.clone(), clock)
        .await
        .context("connecting to libvirt")?;
    Ok(Arc::new(platform))
}

/// A build without the `libvirt` feature has no libvirt platform: says so, and how to get one.
#[cfg(not(feature = "libvirt"))]
async fn libvirt_platform(
    _config: &steward_adapters::platform::libvirt::LibvirtConfig,
    _now: Timestamp,
) -> anyhow::Result<Arc<dyn Platform>> {
    bail!(
        "[platform] kind = \"libvirt\": this steward was built without the libvirt platform; \
         rebuild it with `cargo build --release --features libvirt` (needs libvirt-dev)"
    )
}
