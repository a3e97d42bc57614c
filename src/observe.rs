//! `steward observe`: one live pass over the sources, printed as a table or JSON, optionally
//! appended to a JSONL recording.
//!
//! Works with zero config: `steward observe --patroni http://HOST:8008 [--prometheus
//! http://HOST:9090]` asks the given URLs in turn for `/cluster`, then every member's own
//! `/patroni` (concurrently; the leader's says who streams), then one Prometheus query per
//! metric. Assembly is pure and lives in
//! `steward_runtime::observe::assemble` (the runtime's observer shares it); this file does the asking.
//!
//! What it is not: a loop. It reads once, decides nothing, and changes nothing.

pub mod render;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use steward_adapters::patroni::{PatroniApi, PatroniClient, PatroniConfig, PatroniSettings};
use steward_adapters::prometheus::{
    PrometheusClient, PrometheusConfig, PrometheusSettings, DEFAULT_MAX_AGE,
};
use steward_model::observation::Observation;
use steward_model::Timestamp;
use tracing::{info, warn};

use steward_runtime::observe::assemble::{assemble, to_records, Answers};

/// The cluster name used when neither `--cluster` nor Patroni's `scope` gives one.
const FALLBACK_CLUSTER_NAME: &str = "postgres";

/// `steward observe`
#[derive(clap::Args, Debug, Clone)]
pub struct ObserveArgs {
    /// Patroni REST API URL of any member (e.g. http://127.0.0.11:8008); repeat or separate
    /// with commas to give several, tried in order until one answers.
    #[arg(
        long = "patroni",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub patroni: Vec<String>,

    /// Prometheus base URL (e.g. http://127.0.0.1:9090); without it, only Patroni is asked.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// Patroni REST API user (basic auth), with --patroni-password-env.
    #[arg(long, value_name = "USER")]
    pub patroni_username: Option<String>,

    /// Environment variable holding the Patroni REST API password (never given inline).
    #[arg(long, value_name = "VAR")]
    pub patroni_password_env: Option<String>,

    /// Cluster name to report and record (default: Patroni's scope).
    #[arg(long)]
    pub cluster: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Append the observation to this JSON-lines file, one member per line (the format
    /// `steward evaluate --jsonl` reads).
    #[arg(long, value_name = "FILE.jsonl")]
    pub record: Option<PathBuf>,

    /// Time allowed for each request.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// How `observe` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// The observation as JSON.
    Json,
}

/// Runs one pass and prints it to `out`.
pub async fn run(args: &ObserveArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    // The command's edge: the one place `observe` reads the wall clock.
    let now = Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
    let patroni = patroni_settings(args)?;
    let prometheus = args
        .prometheus
        .as_deref()
        .map(|url| {
            let raw = PrometheusConfig {
                url: Some(url.to_string()),
                timeout: args.timeout,
                ..Default::default()
            };
            raw.validate()
                .map_err(|e| crate::UsageError(format!("--prometheus: {e}")))
        })
        .transpose()?;
    let obs = observe_once(&patroni, prometheus.as_ref(), args.cluster.as_deref(), now).await?;
    let max_age = prometheus
        .as_ref()
        .map(|p| p.max_age)
        .unwrap_or(DEFAULT_MAX_AGE);
    match args.format {
        Format::Table => render::table(&obs, max_age, out).context("writing the table")?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &obs).context("writing the observation")?;
            writeln!(out).context("writing the observation")?;
        }
    }
    if let Some(path) = &args.record {
        append_records(path, &obs, max_age)?;
    }
    Ok(())
}

fn patroni_settings(args: &ObserveArgs) -> anyhow::Result<PatroniSettings> {
    let raw = PatroniConfig {
        urls: args.patroni.clone(),
        username: args.patroni_username.clone(),
        password_env: args.patroni_password_env.clone(),
        timeout: args.timeout,
        ..Default::default()
    };
    Ok(raw
        .validate()
        .map_err(|e| crate::UsageError(format!("--patroni: {e}")))?)
}

/// One pass: `/cluster` from the first URL that answers, each member's `/patroni`, then the
/// Prometheus metrics. Source failures other than "no Patroni at all" become notes.
pub async fn observe_once(
    patroni: &PatroniSettings,
    prometheus: Option<&PrometheusSettings>,
    cluster_name: Option<&str>,
    now: Timestamp,
) -> anyhow::Result<Observation> {
    // Jitter only spreads retries; seeding it from the clock is fine outside tests.
    let seed = now.as_millis() as u64;
    let client =
        Arc::new(PatroniClient::with_seed(patroni, seed).context("setting up the patroni client")?);
    let cluster = client
        .cluster()
        .await
        .context("asking patroni for /cluster")?;
    info!(members = cluster.members.len(), "patroni /cluster answered");

    let mut notes = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for m in &cluster.members {
        let Some(base) = m.api_base() else {
            notes.push(format!("{}: /cluster gives no api_url", m.name));
            continue;
        };
        let (client, name) = (Arc::clone(&client), m.name.clone());
        tasks.spawn(async move { (name, client.member_status(&base).await) });
    }
    let mut statuses = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((name, Ok(status))) => statuses.push((name, status)),
            Ok((name, Err(e))) => {
                warn!(member = %name, error = %e, "member's /patroni did not answer");
                notes.push(format!("{name}: /patroni failed ({}): {e}", e.class()));
            }
            Err(e) => notes.push(format!("a /patroni request task failed: {e}")),
        }
    }

    let mut metrics = BTreeMap::new();
    if let Some(settings) = prometheus {
        let client = PrometheusClient::new(settings).context("setting up the prometheus client")?;
        let (readings, errors) = client.instant_all(now).await;
        metrics = readings;
        for (metric, e) in errors {
            warn!(metric = metric.as_str(), error = %e, "prometheus query failed");
            notes.push(format!(
                "{}: prometheus query failed ({}): {:#}",
                metric.as_str(),
                e.class(),
                anyhow::Error::from(e)
            ));
        }
    }

    // Patroni 4.x says its scope in /cluster, 3.x only in each member's /patroni.
    let name = cluster_name
        .map(str::to_string)
        .or(cluster.scope.clone())
        .or_else(|| statuses.iter().find_map(|(_, s)| s.scope.clone()))
        .unwrap_or_else(|| FALLBACK_CLUSTER_NAME.into());
    let answers = Answers {
        cluster: Some(&cluster),
        statuses: &statuses,
        metrics,
        platform: None,
        notes,
    };
    Ok(assemble(&name, now, &answers))
}

fn append_records(
    path: &std::path::Path,
    obs: &Observation,
    max_age: Duration,
) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} to append", path.display()))?;
    // One write per pass: lines of one observation are not interleaved with another writer's.
    let mut buf = Vec::new();
    for record in to_records(obs, max_age) {
        serde_json::to_writer(&mut buf, &record).context("encoding a record")?;
        buf.push(b'\n');
    }
    file.write_all(&buf)
        .with_context(|| format!("appending to {}", path.display()))?;
    Ok(())
}
