//! `steward evaluate`: the dry run of the policies over recorded history.
//!
//! What this is: read CSV traces (one or several: a scorecard with a sum), synthetic traces
//! (`--synthetic KIND:SEEDS`), a JSON-lines recording or a cluster's history in Prometheus
//! (`--prometheus URL --since 24h`, turned into the same records), replay each through Steward's
//! policies and (with `--baseline`) through the Kubernetes HPA algorithm, the Kubernetes VPA
//! recommender, a naive threshold rule and the hindsight cost floor (one fixed size), with the
//! same band, bounds and step, and print what each would have done and what it cost. Nothing is
//! actuated and no clock is read: time is the recording's.
//! What it is not: the live loop (`scaler`), nor a simulation of how load moves between members
//! when the replica count changes (a recording's members are replayed as they were; the replica
//! scorecard spreads the recorded CPU over the count each policy holds, see `recording`).
//!
//! Start at [`run`]. The pieces: [`input`] (readers), [`synthetic`] (the seeded trace
//! generator), [`sizer`] (the trait and the HPA, naive and fixed baselines), [`vpa`] (the VPA
//! recommender), [`steward`] (Steward's policies behind the trait), [`mod@replay`] (the loop and
//! the score), `recording` (a JSON-lines recording, every knob), [`mod@prometheus`] (history from
//! Prometheus, replayed as a recording), [`output`] (text and JSON, one input or a scorecard of
//! several), [`chart`] (SVG: the timeline and the plane).
//!
//! Fairness: every policy of a knob gets the same band, bounds and step (Steward's config), the
//! same samples at the same times, and the same starting size.

pub mod chart;
pub mod input;
pub mod output;
pub mod prometheus;
mod recording;
pub mod replay;
pub mod sizer;
pub mod steward;
pub mod synthetic;
pub mod vpa;

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use steward_model::{Resource, Role, Timestamp};
use steward_policies::PolicyConfig;

use self::output::{InputInfo, KnobReport, Report};
use self::replay::{interval_secs, replay, Track};
use self::sizer::{Fixed, Hpa, Limits, Naive, Sizer};
use self::steward::{StewardDisk, StewardVertical};
use self::vpa::Vpa;

/// How a CSV's values relate to the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Values {
    /// Percent of the machine's size (`--size`), as in CloudWatch CPU traces: usage = value / 100 x size.
    Percent,
    /// A fraction of the machine's size: usage = value x size.
    Fraction,
    /// The usage itself, in the resource's unit (vCPUs, or bytes for memory and disk).
    Absolute,
    /// Increments of the usage (e.g. bytes written per interval, for a disk that keeps all it
    /// is given): usage = the running sum of the values, in the resource's unit.
    Cumulative,
}

/// Which baselines to run beside Steward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// Steward only.
    None,
    /// The Kubernetes HPA algorithm (tolerance 0.1, 300 s scale-down stabilization, 15 s sync).
    Hpa,
    /// The Kubernetes VPA recommender (decaying histogram, half-life 24 h, target p90 + 15 %,
    /// range p50..p95 + 15 %); resizes only when the size leaves the range.
    Vpa,
    /// A threshold rule without windows or cooldown.
    Naive,
    /// The static cost floor, in hindsight: the smallest size keeping the whole trace under
    /// `high` 99 % of the time, set once. Not a policy: it has read the trace before the first
    /// sample.
    Fixed,
    /// Every one of them.
    All,
}

impl Baseline {
    fn includes(self, one: Baseline) -> bool {
        self == one || self == Baseline::All
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A timeline and a table, for people.
    Text,
    /// One JSON object (`summary.<policy>.changes`, ...), for scripts.
    Json,
}

/// Whose resizes the timeline lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Timeline {
    /// Steward's only (baselines are in the summary).
    Steward,
    /// Every policy's.
    All,
    /// None: the summary only.
    None,
}

/// `steward evaluate`: replay recorded metrics through the policies, with nothing actuated.
#[derive(clap::Args, Debug, Clone)]
#[command(group(
    clap::ArgGroup::new("input")
        .args(["csv", "synthetic", "jsonl", "synthetic_cluster", "prometheus"])
        .multiple(true)
        .required(true)
))]
#[command(group(clap::ArgGroup::new("traces").args(["csv", "synthetic"]).multiple(true)))]
#[command(group(
    clap::ArgGroup::new("generated")
        .args(["synthetic", "synthetic_cluster"])
        .multiple(true)
))]
pub struct EvaluateArgs {
    /// A CSV trace `timestamp,value` (a header row is allowed), e.g. the NAB traces; say what it
    /// measures with --role, --resource, --size and --values. Repeat it, or name a folder (its
    /// *.csv files), for a scorecard: every trace replayed alike, a row per trace and policy and
    /// a sum row.
    #[arg(
        long,
        value_name = "FILE|DIR",
        conflicts_with_all = ["jsonl", "synthetic_cluster", "prometheus"]
    )]
    pub csv: Vec<PathBuf>,
    /// Synthetic traces, 14 days at 5 minutes in percent of --size, deterministic per seed:
    /// KIND:SEED, KIND:FROM-TO or all:FROM-TO, with KIND one of diurnal, weekly, bursts, steps,
    /// leak, noise, mixed (e.g. --synthetic diurnal:6-10). Repeatable; mixes with --csv.
    #[arg(
        long,
        value_name = "KIND:SEEDS",
        conflicts_with_all = ["jsonl", "synthetic_cluster", "prometheus"]
    )]
    pub synthetic: Vec<synthetic::Spec>,
    /// With --synthetic or --synthetic-cluster: also write each trace as a NAB-style CSV,
    /// DIR/<kind>-<seed>.csv, and each recording as DIR/<kind>-<seed>.jsonl.
    #[arg(long, value_name = "DIR", requires = "generated")]
    pub write_synthetic: Option<PathBuf>,
    /// A JSON-lines recording of member records (`steward observe --record`); runs vertical CPU
    /// and memory per role (busiest member), disk and the replica count. Repeat it, or name a
    /// folder (its *.jsonl files), for a scorecard with a sum row per knob and policy.
    #[arg(long, value_name = "FILE|DIR", conflicts_with = "prometheus")]
    pub jsonl: Vec<PathBuf>,
    /// Synthetic whole-cluster recordings (three database members and two balancers, 14 days
    /// at 5 minutes, OOM kills where big sorts meet the memory limit), replayed like --jsonl:
    /// KIND:SEEDS as for --synthetic (e.g. --synthetic-cluster all:6-10). Repeatable; mixes
    /// with --jsonl.
    #[arg(long, value_name = "KIND:SEEDS", conflicts_with = "prometheus")]
    pub synthetic_cluster: Vec<synthetic::Spec>,
    /// Prometheus base URL (e.g. http://127.0.0.1:9090): replay the cluster's history from
    /// it, one range query per metric for all members, like a --jsonl recording. Give the
    /// members' size with --cpus, --memory and --disk (a knob without a size is skipped).
    #[arg(long, value_name = "URL", help_heading = "Prometheus history")]
    pub prometheus: Option<String>,
    /// With --prometheus: how much history, back from --until (e.g. 24h, 90m, 7d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration, help_heading = "Prometheus history")]
    pub since: Duration,
    /// With --prometheus: the time between two samples (whole seconds).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration, help_heading = "Prometheus history")]
    pub step: Duration,
    /// With --prometheus: where the history ends (RFC 3339, or epoch seconds); default now.
    #[arg(long, value_name = "TIME", value_parser = Timestamp::parse, requires = "prometheus", help_heading = "Prometheus history")]
    pub until: Option<Timestamp>,
    /// With --prometheus: the vCPUs each member had (e.g. 2, 500m).
    #[arg(
        long,
        value_name = "AMOUNT",
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub cpus: Option<String>,
    /// With --prometheus: the memory each member had (e.g. 4GiB).
    #[arg(
        long,
        value_name = "AMOUNT",
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub memory: Option<String>,
    /// With --prometheus: the data disk each member had (e.g. 100GiB).
    #[arg(
        long,
        value_name = "AMOUNT",
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub disk: Option<String>,
    /// With --prometheus: members (by the member label) that are balancers; the rest are
    /// databases. Repeat or separate with commas.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub balancers: Vec<String>,
    /// With --prometheus: the query telling each member's Patroni role (1 leader, 0 replica),
    /// by the `member` label; empty to not ask (the replica count then holds: no leader known).
    #[arg(long, value_name = "PROMQL", default_value = prometheus::DEFAULT_LEADER_QUERY, help_heading = "Prometheus history")]
    pub leader_query: String,
    /// With --prometheus: basic-auth user, with --prometheus-password-env.
    #[arg(
        long,
        value_name = "USER",
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub prometheus_username: Option<String>,
    /// With --prometheus: environment variable holding the basic-auth password (never inline).
    #[arg(
        long,
        value_name = "VAR",
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub prometheus_password_env: Option<String>,
    /// With --prometheus: environment variable holding a bearer token (never inline).
    #[arg(
        long,
        value_name = "VAR",
        requires = "prometheus",
        help_heading = "Prometheus history"
    )]
    pub prometheus_bearer_token_env: Option<String>,
    /// With --prometheus: time allowed for each range query.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration, help_heading = "Prometheus history")]
    pub timeout: Duration,
    /// With --csv or --synthetic: the role the traces belong to.
    #[arg(long, default_value = "database")]
    pub role: Role,
    /// With --csv or --synthetic: the resource the traces measure (cpu, memory or disk).
    #[arg(long, default_value = "cpu")]
    pub resource: Resource,
    /// With --csv or --synthetic: the size the machine had when the trace was recorded, and the
    /// replay's starting size: vCPUs (`2`, `1.5`, `500m`) or bytes with a unit (`4GiB`,
    /// `512MiB`, `100GB`).
    #[arg(long, value_name = "AMOUNT", requires = "traces")]
    pub size: Option<String>,
    /// With --csv: how the values relate to --size (synthetic traces are always percent).
    #[arg(long, value_enum, default_value = "percent")]
    pub values: Values,
    /// Baselines to run beside Steward, with the same band, bounds and step.
    #[arg(long, value_enum, default_value = "none")]
    pub baseline: Baseline,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Whose resizes the timeline lists [default: steward for one input, none for several].
    #[arg(long, value_enum)]
    pub timeline: Option<Timeline>,
    /// Also draw the usage, the band and each policy's size into this SVG file (one input; for
    /// a recording: the first vertical knob, usually database CPU).
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Also draw every policy on one plane into this SVG file: resource-hours (x) against
    /// minutes above high (y), point size = changes; a panel for the sum and one per trace
    /// (per knob for a recording).
    #[arg(long, value_name = "FILE.svg")]
    pub plane: Option<PathBuf>,
    /// Skip rows that cannot be parsed (counted and reported) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

/// Why a `--size` could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AmountError {
    /// The text is not an amount of the resource (the config's own parser says why).
    #[error(transparent)]
    Parse(#[from] steward_policies::AmountError),
    #[error("`{0}` must be positive and finite")]
    NotPositive(String),
    #[error("`{text}` needs a unit for {resource} (e.g. 4GiB, 512MiB, 100GB)")]
    NoUnit { text: String, resource: Resource },
}

/// Reads an amount of `resource` with the config file's parsers: vCPUs (`2`, `0.5`, `500m`) or
/// bytes with a unit (`4GiB`, `4 GiB`, `4G` = 4 GiB as Kubernetes and Docker mean it, `100GB`
/// = 10^11). Unlike the config, a command-line size must be positive and bytes need a unit: a
/// bare `--size 4` for memory is far more likely a slip than four bytes.
pub fn parse_amount(resource: Resource, text: &str) -> Result<f64, AmountError> {
    let t = text.trim();
    let amount = match resource {
        Resource::Cpu => steward_policies::parse_cpus(t)?,
        Resource::Memory | Resource::Disk => {
            if t.parse::<f64>().is_ok() {
                return Err(AmountError::NoUnit {
                    text: t.to_string(),
                    resource,
                });
            }
            steward_policies::parse_bytes(t)?
        }
    };
    if !(amount.is_finite() && amount > 0.0) {
        return Err(AmountError::NotPositive(t.to_string()));
    }
    Ok(amount)
}

/// The divisor that turns amounts into the unit of `resource_hours` (GiB for bytes).
pub fn hours_unit(resource: Resource) -> f64 {
    match resource {
        Resource::Cpu => 1.0,
        Resource::Memory | Resource::Disk => 1024f64.powi(3),
    }
}

/// Runs `steward evaluate` with validated policies, writing the report to `out`.
pub fn run(args: &EvaluateArgs, policy: PolicyConfig, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut flat = false;
    if !args.csv.is_empty() || !args.synthetic.is_empty() {
        let traces = read_traces(args)?;
        if traces.len() > 1 && args.chart.is_some() {
            return Err(crate::UsageError(format!(
                "--chart draws one trace's timeline; for {} traces use --plane FILE.svg",
                traces.len()
            ))
            .into());
        }
        let timeline = args.timeline.unwrap_or(if traces.len() == 1 {
            Timeline::Steward
        } else {
            Timeline::None
        });
        for trace in &traces {
            reports.push(evaluate_trace(args, trace, &policy, timeline)?);
        }
        flat = true;
    } else if !args.jsonl.is_empty() || !args.synthetic_cluster.is_empty() {
        let sources = recording::sources(args)?;
        if sources.len() > 1 && args.chart.is_some() {
            return Err(crate::UsageError(format!(
                "--chart draws one recording's timeline; for {} recordings use --plane FILE.svg",
                sources.len()
            ))
            .into());
        }
        let timeline = if sources.len() == 1 {
            Timeline::Steward
        } else {
            Timeline::None
        };
        for source in &sources {
            reports.push(recording::evaluate_source(args, source, &policy, timeline)?);
        }
    } else if let Some(url) = &args.prometheus {
        // The command's edge: the one place `evaluate` reads the wall clock, and only
        // when --until does not say where the history ends.
        let until = args
            .until
            .unwrap_or_else(|| Timestamp::from_millis(chrono::Utc::now().timestamp_millis()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        reports.push(runtime.block_on(recording::evaluate_prometheus(args, url, until, &policy))?);
    } else {
        return Err(crate::UsageError(
            "give traces with --csv FILE or --synthetic KIND:SEEDS, recordings with --jsonl FILE or --synthetic-cluster KIND:SEEDS, or a history with --prometheus URL".into(),
        )
        .into());
    }
    if let Some(path) = &args.plane {
        draw_plane(path, &reports)?;
    }
    let written = match (args.format, reports.as_slice()) {
        (Format::Text, [one]) => output::write_text(one, out),
        (Format::Json, [one]) => output::write_json(one, flat, out),
        (Format::Text, several) => output::write_scorecard_text(several, out),
        (Format::Json, several) => output::write_scorecard_json(several, out),
    };
    match written {
        // The reader went away (`| head`): what it wanted, it has; that is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the report"),
    }
}

/// One trace to replay: read from a CSV file or generated.
struct TraceInput {
    /// The file, or `synthetic:<kind>:<seed>`.
    name: String,
    format: &'static str,
    samples: Vec<input::Sample>,
    skipped: Vec<input::Skipped>,
    /// Synthetic traces are percent of the size whatever --values says.
    percent: bool,
}

/// The traces of --csv (files, and the *.csv files of folders, sorted) and --synthetic, in
/// that order; writes the synthetic ones out with --write-synthetic.
fn read_traces(args: &EvaluateArgs) -> anyhow::Result<Vec<TraceInput>> {
    let mut traces = Vec::new();
    for path in &args.csv {
        for file in files_of(path, "csv")? {
            let series = input::read_csv(open(&file)?, &file.display().to_string(), args.skip_bad)?;
            log_read(&file, series.samples.len(), &series.skipped);
            traces.push(TraceInput {
                name: file.display().to_string(),
                format: "csv",
                samples: series.samples,
                skipped: series.skipped,
                percent: false,
            });
        }
    }
    for spec in &args.synthetic {
        for (kind, seed) in spec.traces() {
            let trace = synthetic::generate(kind, seed);
            if let Some(dir) = &args.write_synthetic {
                let name = format!("{}-{seed}.csv", kind.name());
                write_synthetic(dir, &name, |out| trace.write_csv(out))?;
            }
            let samples = trace
                .times
                .iter()
                .zip(&trace.values)
                .enumerate()
                .map(|(i, (&at, &value))| input::Sample {
                    at,
                    value,
                    line: i as u64 + 2,
                })
                .collect();
            traces.push(TraceInput {
                name: trace.name,
                format: "synthetic",
                samples,
                skipped: Vec::new(),
                percent: true,
            });
        }
    }
    Ok(traces)
}

/// `path` itself, or for a folder its files named `*.<extension>`, sorted (at least one).
fn files_of(path: &Path, extension: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read the folder {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case(extension))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .{extension} file", path.display());
    }
    Ok(files)
}

/// Creates the --write-synthetic folder and writes one generated input into it.
fn write_synthetic(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    write(&mut file)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BufReader::new(file))
}

/// The baselines `choice` asks for, with `limits`, in the order steward's tables use: hpa,
/// vpa, naive, fixed. The VPA sizes a `resource` (none for the replica count, where it has no
/// meaning); the fixed size reads the whole of `usage` first.
fn baselines(
    choice: Baseline,
    limits: Limits,
    resource: Option<Resource>,
    times: &[Timestamp],
    usage: &[Option<f64>],
) -> Vec<Box<dyn Sizer>> {
    let mut sizers: Vec<Box<dyn Sizer>> = Vec::new();
    if choice.includes(Baseline::Hpa) {
        sizers.push(Box::new(Hpa::new(limits)));
    }
    if let (true, Some(resource)) = (choice.includes(Baseline::Vpa), resource) {
        sizers.push(Box::new(Vpa::new(limits, resource)));
    }
    if choice.includes(Baseline::Naive) {
        sizers.push(Box::new(Naive::new(limits)));
    }
    if choice.includes(Baseline::Fixed) {
        let secs: Vec<f64> = (0..times.len()).map(|i| interval_secs(times, i)).collect();
        sizers.push(Box::new(Fixed::hindsight(limits, usage, &secs)));
    }
    sizers
}

/// A progress bar on stderr when stdout is a terminal and the work is long; hidden otherwise,
/// so pipes and scripts see nothing but the report.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    const LONG: u64 = 200_000;
    if total < LONG || !std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} samples {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn input_info(
    file: &Path,
    format: &'static str,
    samples: usize,
    from: Timestamp,
    to: Timestamp,
    skipped: &[input::Skipped],
) -> InputInfo {
    InputInfo {
        file: file.display().to_string(),
        format,
        samples,
        from,
        to,
        skipped: skipped.len(),
        skipped_lines: skipped.iter().take(100).map(|s| s.line).collect(),
    }
}

/// Says what was read, and each skipped row (the first few), on the log.
fn log_read(path: &Path, samples: usize, skipped: &[input::Skipped]) {
    tracing::info!(file = %path.display(), samples, skipped = skipped.len(), "input read");
    for s in skipped.iter().take(10) {
        tracing::warn!(file = %path.display(), line = s.line, error = %s.error, "bad row skipped");
    }
}

/// Keeps the timeline's changes (Steward's, or everyone's) in time order.
fn timeline(tracks: &[Track], which: Timeline) -> Vec<replay::Change> {
    let mut changes: Vec<replay::Change> = tracks
        .iter()
        .filter(|t| match which {
            Timeline::All => true,
            Timeline::Steward => t.policy == "steward",
            Timeline::None => false,
        })
        .flat_map(|t| t.changes.iter().cloned())
        .collect();
    changes.sort_by_key(|c| c.at);
    changes
}

/// Replays one trace (CSV or synthetic) through Steward and the baselines.
fn evaluate_trace(
    args: &EvaluateArgs,
    trace: &TraceInput,
    policy: &PolicyConfig,
    which: Timeline,
) -> anyhow::Result<Report> {
    let (role, resource) = (args.role, args.resource);
    let size_text = args
        .size
        .as_deref()
        .context("--size is required with --csv and --synthetic: the size the machine had")?;
    let size = parse_amount(resource, size_text).context("bad --size")?;
    let values = if trace.percent {
        Values::Percent
    } else {
        args.values
    };
    let scale = match values {
        Values::Percent => size / 100.0,
        Values::Fraction => size,
        Values::Absolute | Values::Cumulative => 1.0,
    };
    let times: Vec<Timestamp> = trace.samples.iter().map(|s| s.at).collect();
    let mut usage = Vec::with_capacity(times.len());
    let mut sum = 0.0;
    for s in &trace.samples {
        if s.value < 0.0 {
            bail!(
                "{}, line {}: the value {} is negative: usage cannot be",
                trace.name,
                s.line,
                s.value
            );
        }
        sum += s.value;
        usage.push(Some(if values == Values::Cumulative {
            sum
        } else {
            s.value * scale
        }));
    }
    let roles = policy.role(role);
    let (limits, mut sizers): (Limits, Vec<Box<dyn Sizer>>) = match roles.vertical(resource) {
        Some(config) => {
            let limits = steward::limits_of(config);
            let mut sizers: Vec<Box<dyn Sizer>> = vec![Box::new(StewardVertical::new(
                role,
                resource,
                config.clone(),
                true,
            ))];
            sizers.extend(baselines(
                args.baseline,
                limits,
                Some(resource),
                &times,
                &usage,
            ));
            (limits, sizers)
        }
        None => {
            if args.baseline != Baseline::None {
                return Err(crate::UsageError(
                    "--baseline compares vertical CPU and memory policies; a disk has no band to compare".into(),
                )
                .into());
            }
            (
                steward::disk_limits_of(&roles.disk),
                vec![Box::new(StewardDisk::new(role, roles.disk.clone()))],
            )
        }
    };
    let knob = format!("{role}.{resource}");
    let bar = progress_bar(times.len() as u64 * sizers.len() as u64);
    let tracks: Vec<Track> = sizers
        .iter_mut()
        .map(|sizer| {
            let unit = hours_unit(resource);
            replay(
                sizer.as_mut(),
                &knob,
                &times,
                &usage,
                size,
                limits,
                unit,
                args.chart.is_some(),
                &mut |n| bar.inc(n),
            )
        })
        .collect();
    bar.finish_and_clear();
    if let Some(chart_path) = &args.chart {
        draw_chart(chart_path, &knob, resource, limits, &times, &usage, &tracks)?;
    }
    let (from, to) = (times[0], times[times.len() - 1]);
    Ok(Report {
        input: InputInfo {
            file: trace.name.clone(),
            format: trace.format,
            samples: times.len(),
            from,
            to,
            skipped: trace.skipped.len(),
            skipped_lines: trace.skipped.iter().take(100).map(|s| s.line).collect(),
        },
        knobs: vec![KnobReport {
            knob,
            resource: Some(resource),
            limits: Some(limits),
            initial: size,
            policies: tracks.iter().map(|t| (t.policy, t.summary)).collect(),
        }],
        timeline: timeline(&tracks, which),
    })
}

/// The plane (`--plane`): for each knob, a panel for the sum of the reports (when there are
/// several), then one per report.
fn draw_plane(path: &Path, reports: &[Report]) -> anyhow::Result<()> {
    let hours_unit = |k: &KnobReport| match k.resource {
        Some(Resource::Cpu) => "vCPU-hours",
        Some(_) => "GiB-hours",
        None => "member-hours",
    };
    let points = |policies: &[(&'static str, replay::Summary)]| {
        policies
            .iter()
            .map(|(name, s)| (*name, s.resource_hours, s.minutes_above_high, s.changes))
            .collect::<Vec<_>>()
    };
    let mut panels = Vec::new();
    if reports.len() > 1 {
        for (knob, policies) in output::sums(reports) {
            panels.push(chart::PlanePanel {
                title: format!("sum of {} traces ({})", reports.len(), knob.knob),
                hours_unit: hours_unit(knob),
                points: points(&policies),
            });
        }
    }
    for report in reports {
        for k in &report.knobs {
            let name = output::short_name(&report.input.file);
            panels.push(chart::PlanePanel {
                title: if report.knobs.len() > 1 {
                    format!("{name} ({})", k.knob)
                } else {
                    name
                },
                hours_unit: hours_unit(k),
                points: points(&k.policies),
            });
        }
    }
    let title = "every policy on one plane: cost (resource-hours) against time above high";
    chart::draw_plane(path, title, &panels)?;
    Ok(())
}

fn draw_chart(
    path: &Path,
    knob: &str,
    resource: Resource,
    limits: Limits,
    times: &[Timestamp],
    usage: &[Option<f64>],
    tracks: &[Track],
) -> anyhow::Result<()> {
    let unit = hours_unit(resource);
    let start = times.first().map_or(0, |t| t.as_millis());
    let hours: Vec<f64> = times
        .iter()
        .map(|t| t.as_millis().saturating_sub(start) as f64 / 3_600_000.0)
        .collect();
    // A missing usage is drawn at zero: the chart shows the gap, the summary never counts it.
    let usage: Vec<f64> = usage.iter().map(|u| u.unwrap_or(0.0) / unit).collect();
    let sizes: Vec<Vec<f64>> = tracks
        .iter()
        .map(|t| t.sizes.iter().map(|s| s / unit).collect())
        .collect();
    let data = chart::ChartData {
        title: format!(
            "{knob}: usage and size ({} .. {})",
            times[0],
            times[times.len() - 1]
        ),
        unit: if resource == Resource::Cpu {
            "vCPU"
        } else {
            "GiB"
        },
        hours: &hours,
        usage: &usage,
        sizes: tracks
            .iter()
            .zip(&sizes)
            .map(|(t, s)| (t.policy, s.as_slice()))
            .collect(),
        band: (limits.low, limits.high),
    };
    chart::draw(path, &data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EvaluateArgs,
    }

    fn data(name: &str) -> String {
        format!("{}/tests/data/evaluate/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn run_json(argv: &[&str]) -> anyhow::Result<serde_json::Value> {
        let cli = Cli::try_parse_from(std::iter::once("evaluate").chain(argv.iter().copied()))?;
        let mut out = Vec::new();
        run(&cli.args, PolicyConfig::default(), &mut out)?;
        Ok(serde_json::from_slice(&out)?)
    }

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_csv_gives_a_flat_summary_per_policy() {
        let v = run_json(&[
            "--csv",
            &data("surge.csv"),
            "--size",
            "2",
            "--baseline",
            "all",
            "--format",
            "json",
        ])
        .unwrap();
        for policy in ["steward", "hpa", "naive"] {
            assert!(v["summary"][policy]["changes"].is_u64(), "{policy}: {v}");
        }
        // 2 hours at 2 vCPU at least (the surge only grows): 4 vCPU-hours or more.
        assert!(
            v["summary"]["hpa"]["resource_hours"].as_f64().unwrap() >= 2.0,
            "{v}"
        );
        assert!(
            v["summary"]["steward"]["changes"].as_u64().unwrap() >= 1,
            "{v}"
        );
    }

    #[test]
    fn a_csv_needs_a_size_and_a_disk_has_no_baseline() {
        let err = run_json(&["--csv", &data("surge.csv")]).unwrap_err();
        assert!(format!("{err:#}").contains("--size is required"), "{err:#}");
        let err = run_json(&[
            "--csv",
            &data("surge.csv"),
            "--resource",
            "disk",
            "--size",
            "10GiB",
            "--baseline",
            "hpa",
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("disk has no band"), "{err:#}");
        assert!(run_json(&["--csv", &data("surge.csv"), "--jsonl", "x"]).is_err());
    }

    #[test]
    fn a_disk_trace_runs_the_disk_policy() {
        // 95 % full during the surge: above the disk's `high`, so it grows and never shrinks.
        let v = run_json(&[
            "--csv",
            &data("surge.csv"),
            "--resource",
            "disk",
            "--size",
            "10GiB",
            "--format",
            "json",
        ])
        .unwrap();
        let s = &v["summary"]["steward"];
        assert!(s["changes"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(s["direction_changes"], 0, "{v}");
    }

    #[test]
    fn cumulative_values_fill_a_disk() {
        // surge.csv sums to 480 x 40 + 180 x 55 = 29,100 bytes: a 16 KiB disk must grow.
        let v = run_json(&[
            "--csv",
            &data("surge.csv"),
            "--resource",
            "disk",
            "--size",
            "16KiB",
            "--values",
            "cumulative",
            "--format",
            "json",
        ])
        .unwrap();
        let s = &v["summary"]["steward"];
        assert!(s["final_size"].as_f64().unwrap() >= 29_100.0, "{v}");
    }

    #[test]
    fn a_recording_runs_every_knob() {
        let v = run_json(&[
            "--jsonl",
            &data("recording.jsonl"),
            "--baseline",
            "all",
            "--format",
            "json",
            "--timeline",
            "all",
        ])
        .unwrap();
        for knob in [
            "database.cpu",
            "database.memory",
            "database.disk",
            "database.replicas",
            "balancer.cpu",
            "balancer.memory",
        ] {
            assert!(
                v["summary"][knob]["steward"]["changes"].is_u64(),
                "{knob}: {}",
                v["summary"]
            );
        }
        assert!(
            v["summary"].get("balancer.disk").is_none(),
            "balancers record no disk"
        );
        // The primary's CPU surge (1.8 of 2 vCPU for 25 minutes) grows database.cpu.
        let timeline = v["timeline"].as_array().unwrap();
        assert!(timeline.iter().any(|c| c["knob"] == "database.cpu"
            && c["policy"] == "steward"
            && c["action"] == "grow"));
        // The OOM kill at 10:55 grows memory at once.
        assert!(
            timeline.iter().any(|c| c["knob"] == "database.memory"
                && c["action"] == "grow"
                && c["at"] == "2026-11-26T10:55:00Z"),
            "{timeline:?}"
        );
    }

    /// Found by the `csv` fuzz target: times at both ends of the timestamp range, 584 million
    /// years apart, overflowed the chart's hours (and the replay's intervals).
    #[test]
    fn a_trace_spanning_the_whole_time_range_replays_and_draws() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("extreme.csv");
        std::fs::write(
            &csv,
            "timestamp,value\n-9223372036854775,10\n9223372036854775,20\n",
        )
        .unwrap();
        let chart = dir.path().join("chart.svg");
        let (csv, chart) = (csv.to_str().unwrap(), chart.to_str().unwrap());
        let v = run_json(&[
            "--csv",
            csv,
            "--size",
            "2",
            "--baseline",
            "all",
            "--format",
            "json",
            "--chart",
            chart,
        ])
        .unwrap();
        assert_eq!(v["input"]["samples"], 2, "{v}");
    }

    /// The scorecard's split (tests/data/evaluate/split.toml): the training and test sets
    /// share no synthetic trace and no NAB trace, and every synthetic entry can be run.
    #[test]
    fn the_training_and_test_sets_do_not_overlap() {
        use std::collections::BTreeSet;
        let text = std::fs::read_to_string(data("split.toml")).unwrap();
        let split: toml::Value = toml::from_str(&text).unwrap();
        let set = |name: &str| {
            let part = &split[name];
            let synthetic: BTreeSet<(synthetic::Kind, u64)> = part["synthetic"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|spec| {
                    let spec: synthetic::Spec = spec.as_str().unwrap().parse().unwrap();
                    spec.traces().collect::<Vec<_>>()
                })
                .collect();
            let nab: BTreeSet<String> = part["nab"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            (synthetic, nab)
        };
        let (train, test) = (set("training"), set("test"));
        assert_eq!((train.0.len(), test.0.len()), (35, 35));
        assert!(train.0.is_disjoint(&test.0));
        assert_eq!((train.1.len(), test.1.len()), (3, 3));
        assert!(train.1.is_disjoint(&test.1));
    }

    #[test]
    fn amounts_take_human_units() {
        assert_eq!(parse_amount(Resource::Cpu, "2"), Ok(2.0));
        assert_eq!(parse_amount(Resource::Cpu, "500m"), Ok(0.5));
        assert_eq!(
            parse_amount(Resource::Memory, "4GiB"),
            Ok(4.0 * 1024f64.powi(3))
        );
        assert_eq!(
            parse_amount(Resource::Memory, "512 MiB"),
            Ok(512.0 * 1024f64.powi(2))
        );
        assert_eq!(parse_amount(Resource::Disk, "100GB"), Ok(1e11));
        assert!(matches!(
            parse_amount(Resource::Memory, "4"),
            Err(AmountError::NoUnit { .. })
        ));
        assert!(matches!(
            parse_amount(Resource::Cpu, "2GiB"),
            Err(AmountError::Parse(
                steward_policies::AmountError::NotCpus { .. }
            ))
        ));
        assert!(matches!(
            parse_amount(Resource::Memory, "4 lots"),
            Err(AmountError::Parse(
                steward_policies::AmountError::UnknownUnit { .. }
            ))
        ));
        assert!(matches!(
            parse_amount(Resource::Cpu, "0"),
            Err(AmountError::NotPositive(_))
        ));
        assert!(matches!(
            parse_amount(Resource::Cpu, "lots"),
            Err(AmountError::Parse(_))
        ));
    }
}
