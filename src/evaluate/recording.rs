//! `steward evaluate --jsonl`: a recording of whole observations through every policy.
//!
//! What this is: per role, vertical CPU and memory (the busiest member's usage, since members of
//! one role share one size), the data disk, and for the databases the replica count; with the
//! baselines beside the vertical knobs and (HPA, naive, fixed) beside the replica count. What
//! it is not: a model of how a resize would have changed the load; the recorded usage is
//! replayed as it was.
//!
//! The replica count is the one place where the recording is reshaped: a policy that holds
//! another count than the recorded one sees the replicas' recorded reads (CPU, connections,
//! read rate) spread evenly over the replicas it holds ([`respread`]), as HAProxy's
//! least-busy routing of the read port spreads them; the leader is seen as recorded (no
//! replica takes its writes). Its score: the replicas' recorded CPU in replicas' worth (`sum
//! of cpu_used / cpus` over the replicas, the reads), spread over the replicas a policy holds
//! (`count - 1`), against the replica CPU band: the time the reads were under- or
//! over-provisioned. The leader's own CPU is the vertical knob's business: adding replicas does
//! not relieve it, so it is not scored here. The baselines decide as they would live: the HPA
//! on every member's mean CPU (`demand / count`, with `demand` the database members' CPU in
//! members' worth; its formula `ceil(count x utilization / target)` is `ceil(demand /
//! target)`), with the band's middle as its target; Steward's replica policy on the replicas'
//! CPU and connections. Member-hours and slack count every member and all of `demand`. An
//! observation where a member lacks its CPU or size, or with no leader recorded, has no demand
//! and no reads (missing is not zero): it counts member-hours, no band minutes, and the HPA
//! skips it.
//!
//! A history read from Prometheus (`--prometheus`) is replayed here too: [`super::prometheus`]
//! turns it into the same records, so both inputs run exactly the same code from the
//! observations on.

use std::path::PathBuf;

use steward_model::observation::{Figure, MemberObservation, Observation, PatroniRole};
use steward_model::{Resource, Role, Timestamp};
use steward_policies::replicas::ReplicaPolicy;
use steward_policies::PolicyConfig;

use super::output::{InputInfo, KnobReport, Report};
use super::prometheus::{self as history, Facts, Span};
use super::replay::{interval_secs, replay, Change, Tally, Track};
use super::sizer::{Limits, Sizer};
use super::steward::{self, reason_of, StewardDisk, StewardVertical};
use super::{
    baselines, files_of, hours_unit, input, input_info, open, parse_amount, synthetic, timeline,
    EvaluateArgs, Timeline,
};
use anyhow::Context;
use steward_adapters::prometheus::{MetricsSource, PrometheusConfig};
use steward_model::record::group_by_time;
use steward_model::Size;
use steward_policies::ReplicaConfig;

/// The figure of `resource` a member reports.
fn usage_of(m: &MemberObservation, resource: Resource) -> Option<f64> {
    match resource {
        Resource::Cpu => m.cpu_used,
        Resource::Memory => m.memory_used,
        Resource::Disk => m.disk_used,
    }
    .map(|f| f.value)
}

/// The busiest member's usage of `resource` in each observation (`None` where no member of the
/// role reports it).
fn busiest(observations: &[Observation], role: Role, resource: Resource) -> Vec<Option<f64>> {
    observations
        .iter()
        .map(|o| {
            o.members_of(role)
                .filter_map(|m| usage_of(m, resource))
                .reduce(f64::max)
        })
        .collect()
}

/// The role's size of `resource` in the first observation that tells it.
fn first_size(observations: &[Observation], role: Role, resource: Resource) -> Option<f64> {
    observations
        .iter()
        .flat_map(|o| o.members_of(role))
        .filter_map(|m| m.size.map(|s| s.get(resource)))
        .find(|&s| s > 0.0)
}

/// Where a member of `role` counted a new OOM kill since the previous observation: the memory
/// limit it was killed under (the smallest, if several were), `None` elsewhere. A kill whose
/// member had no recorded size counts whatever the replayed size (infinite limit).
fn oom_kills(observations: &[Observation], role: Role) -> Vec<Option<f64>> {
    let mut last: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    observations
        .iter()
        .map(|o| {
            let mut killed: Option<f64> = None;
            for m in o.members_of(role) {
                if let Some(count) = m.oom_kills.map(|f| f.value) {
                    if last
                        .insert(&m.name, count)
                        .is_some_and(|before| count > before)
                    {
                        let limit = m
                            .size
                            .map(|s| s.memory_bytes as f64)
                            .filter(|l| *l > 0.0)
                            .unwrap_or(f64::INFINITY);
                        killed = Some(killed.map_or(limit, |k| k.min(limit)));
                    }
                }
            }
            killed
        })
        .collect()
}

/// One recording to replay: a file of --jsonl, or one of --synthetic-cluster. Read (or made)
/// only when its turn comes, so a scorecard of many holds one at a time.
pub(super) enum Source {
    File(PathBuf),
    Synthetic(synthetic::Kind, u64),
}

/// The recordings of --jsonl (files, and the *.jsonl files of folders, sorted) and
/// --synthetic-cluster, in that order.
pub(super) fn sources(args: &EvaluateArgs) -> anyhow::Result<Vec<Source>> {
    let mut sources = Vec::new();
    for path in &args.jsonl {
        sources.extend(files_of(path, "jsonl")?.into_iter().map(Source::File));
    }
    for spec in &args.synthetic_cluster {
        sources.extend(
            spec.traces()
                .map(|(kind, seed)| Source::Synthetic(kind, seed)),
        );
    }
    Ok(sources)
}

/// Replays one recording through every policy; with --write-synthetic a generated one is
/// written out first. `which` is whose changes the report's timeline keeps.
pub(super) fn evaluate_source(
    args: &EvaluateArgs,
    source: &Source,
    policy: &PolicyConfig,
    which: Timeline,
) -> anyhow::Result<Report> {
    match source {
        Source::File(path) => {
            let recording =
                input::read_jsonl(open(path)?, &path.display().to_string(), args.skip_bad)?;
            let observations = &recording.observations;
            super::log_read(path, observations.len(), &recording.skipped);
            let (from, to) = (observations[0].at, observations[observations.len() - 1].at);
            let info = input_info(
                path,
                "jsonl",
                observations.len(),
                from,
                to,
                &recording.skipped,
            );
            evaluate_observations(args, observations, policy, info, which)
        }
        Source::Synthetic(kind, seed) => {
            let recording = synthetic::cluster::generate(*kind, *seed);
            if let Some(dir) = &args.write_synthetic {
                let name = format!("{}-{seed}.jsonl", kind.name());
                super::write_synthetic(dir, &name, |out| recording.write_jsonl(out))?;
            }
            let observations = group_by_time(recording.records, "synthetic");
            let info = InputInfo {
                file: recording.name,
                format: "synthetic-cluster",
                samples: observations.len(),
                from: observations[0].at,
                to: observations[observations.len() - 1].at,
                skipped: 0,
                skipped_lines: Vec::new(),
            };
            evaluate_observations(args, &observations, policy, info, which)
        }
    }
}

/// `steward evaluate --prometheus URL`: the history of `[until - since, until]` read from
/// Prometheus and replayed as a recording.
pub(super) async fn evaluate_prometheus(
    args: &EvaluateArgs,
    url: &str,
    until: Timestamp,
    policy: &PolicyConfig,
) -> anyhow::Result<Report> {
    let raw = PrometheusConfig {
        url: Some(url.to_string()),
        username: args.prometheus_username.clone(),
        password_env: args.prometheus_password_env.clone(),
        bearer_token_env: args.prometheus_bearer_token_env.clone(),
        timeout: args.timeout,
        ..Default::default()
    };
    let settings = raw
        .validate()
        .map_err(|e| crate::UsageError(format!("--prometheus: {e}")))?;
    let span = Span::new(until, args.since, args.step)?;
    let facts = Facts {
        cluster: "prometheus".into(),
        size: sizes(args)?,
        balancers: args.balancers.iter().cloned().collect(),
    };
    let client = steward_adapters::prometheus::PrometheusClient::new(&settings)
        .context("setting up the prometheus client")?;
    let leader = match args.leader_query.trim() {
        "" => None,
        q => Some(history::leader_source(&settings, q, "member")?),
    };
    let answers = history::fetch(
        &client,
        leader.as_ref().map(|(c, m)| (c as &dyn MetricsSource, *m)),
        span,
    )
    .await?;
    let records = history::to_records(&answers, &facts);
    let observations = group_by_time(records, &facts.cluster);
    let (Some(first), Some(last)) = (observations.first(), observations.last()) else {
        return Err(history::HistoryError::Empty {
            start: span.start,
            end: span.end,
        }
        .into());
    };
    tracing::info!(
        prometheus = %settings.url,
        observations = observations.len(),
        from = %first.at,
        to = %last.at,
        "history read"
    );
    let info = InputInfo {
        file: settings.url.clone(),
        format: "prometheus",
        samples: observations.len(),
        from: first.at,
        to: last.at,
        skipped: 0,
        skipped_lines: Vec::new(),
    };
    evaluate_observations(args, &observations, policy, info, Timeline::Steward)
}

/// The members' size from --cpus, --memory and --disk (a resource not given stays 0: unknown,
/// and its knob is not replayed).
fn sizes(args: &EvaluateArgs) -> anyhow::Result<Option<Size>> {
    let amount = |flag: &str, resource, text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_amount(resource, t).with_context(|| format!("bad {flag}")))
            .transpose()
    };
    let cpus = amount("--cpus", Resource::Cpu, &args.cpus)?;
    let memory = amount("--memory", Resource::Memory, &args.memory)?;
    let disk = amount("--disk", Resource::Disk, &args.disk)?;
    if cpus.is_none() && memory.is_none() && disk.is_none() {
        tracing::warn!("no --cpus, --memory or --disk: only the replica count can be replayed");
        return Ok(None);
    }
    Ok(Some(Size {
        cpus: cpus.unwrap_or(0.0),
        memory_bytes: memory.unwrap_or(0.0) as u64,
        disk_bytes: disk.unwrap_or(0.0) as u64,
    }))
}

/// Every knob over `observations` (non-empty, in time order).
fn evaluate_observations(
    args: &EvaluateArgs,
    observations: &[Observation],
    policy: &PolicyConfig,
    input: InputInfo,
    which: Timeline,
) -> anyhow::Result<Report> {
    let times: Vec<Timestamp> = observations.iter().map(|o| o.at).collect();
    let mut knobs = Vec::new();
    let mut tracks: Vec<Track> = Vec::new();
    let mut chart_done = false;
    for role in Role::ALL {
        if !observations
            .iter()
            .any(|o| o.members_of(role).next().is_some())
        {
            continue;
        }
        let roles = policy.role(role);
        for resource in [Resource::Cpu, Resource::Memory] {
            let usage = busiest(observations, role, resource);
            let Some(initial) = first_size(observations, role, resource) else {
                tracing::info!(%role, %resource, "no size known: knob not replayed");
                continue;
            };
            if usage.iter().all(Option::is_none) {
                tracing::info!(%role, %resource, "no usage figure at all: knob not replayed");
                continue;
            }
            let config = roles
                .vertical(resource)
                .expect("cpu and memory are vertical");
            let limits = steward::limits_of(config);
            let knob = format!("{role}.{resource}");
            let mut steward = StewardVertical::new(role, resource, config.clone(), true)
                .with_oom(roles.oom.clone());
            let ooms = if resource == Resource::Memory {
                oom_kills(observations, role)
            } else {
                Vec::new()
            };
            let mut knob_tracks = vec![replay_vertical(
                &mut steward,
                &knob,
                &times,
                &usage,
                &ooms,
                initial,
                limits,
                hours_unit(resource),
            )];
            for mut sizer in baselines(args.baseline, limits, Some(resource), &times, &usage) {
                let keep = args.chart.is_some();
                knob_tracks.push(replay(
                    sizer.as_mut(),
                    &knob,
                    &times,
                    &usage,
                    initial,
                    limits,
                    hours_unit(resource),
                    keep,
                    &mut |_| {},
                ));
            }
            if let (Some(chart_path), false) = (&args.chart, chart_done) {
                super::draw_chart(
                    chart_path,
                    &knob,
                    resource,
                    limits,
                    &times,
                    &usage,
                    &knob_tracks,
                )?;
                chart_done = true;
            }
            knobs.push(knob_report(
                knob,
                Some(resource),
                Some(limits),
                initial,
                &knob_tracks,
            ));
            tracks.extend(knob_tracks);
        }
        let used = busiest(observations, role, Resource::Disk);
        if let (Some(initial), true) = (
            first_size(observations, role, Resource::Disk),
            used.iter().any(Option::is_some),
        ) {
            let knob = format!("{role}.disk");
            let wal: Vec<Option<f64>> = observations
                .iter()
                .map(|o| {
                    o.members_of(role)
                        .filter_map(|m| m.wal_bytes.map(|f| f.value))
                        .reduce(f64::max)
                })
                .collect();
            let limits = steward::disk_limits_of(&roles.disk);
            let track = replay_disk(
                StewardDisk::new(role, roles.disk.clone()),
                &knob,
                &times,
                &used,
                &wal,
                initial,
                limits,
            );
            knobs.push(knob_report(
                knob,
                Some(Resource::Disk),
                Some(limits),
                initial,
                std::slice::from_ref(&track),
            ));
            tracks.push(track);
        }
    }
    if observations
        .iter()
        .any(|o| o.members_of(Role::Database).next().is_some())
    {
        let demand = demand(observations);
        let reads = reads(observations);
        let limits = replica_limits(&policy.replicas);
        let initial = observations[0].members_of(Role::Database).count() as f64;
        let mut replica_tracks = vec![replay_replicas(
            ReplicaPolicy::new(policy.replicas.clone()),
            observations,
            &demand,
            &reads,
            limits,
        )];
        for mut sizer in baselines(args.baseline, limits, None, &times, &demand) {
            replica_tracks.push(replay_count(
                sizer.as_mut(),
                &times,
                &demand,
                &reads,
                initial,
                limits,
            ));
        }
        knobs.push(knob_report(
            "database.replicas".to_string(),
            None,
            Some(limits),
            initial,
            &replica_tracks,
        ));
        tracks.extend(replica_tracks);
    }
    Ok(Report {
        input,
        knobs,
        timeline: timeline(&tracks, args.timeline.unwrap_or(which)),
    })
}

fn knob_report(
    knob: String,
    resource: Option<Resource>,
    limits: Option<Limits>,
    initial: f64,
    tracks: &[Track],
) -> KnobReport {
    KnobReport {
        knob,
        resource,
        limits,
        initial,
        policies: tracks.iter().map(|t| (t.policy, t.summary)).collect(),
    }
}

fn change(
    at: Timestamp,
    knob: &str,
    from: f64,
    to: f64,
    utilization: Option<f64>,
    reason: String,
    tally: &mut Tally,
) -> Change {
    let action = tally.resize(from, to);
    Change {
        at,
        policy: "steward",
        knob: knob.to_string(),
        action,
        from,
        to,
        utilization,
        reason,
    }
}

/// Like [`replay`], plus the OOM emergency path: a new OOM kill grows memory at once, unless
/// the replayed size is already above the limit the member was killed under.
#[allow(clippy::too_many_arguments)]
fn replay_vertical(
    steward: &mut StewardVertical,
    knob: &str,
    times: &[Timestamp],
    usage: &[Option<f64>],
    ooms: &[Option<f64>],
    initial: f64,
    limits: Limits,
    unit: f64,
) -> Track {
    let mut tally = Tally::new(limits, unit);
    let (mut size, mut changes, mut sizes) = (initial, Vec::new(), Vec::new());
    for (i, (&at, &used)) in times.iter().zip(usage).enumerate() {
        tally.interval(interval_secs(times, i), used, size);
        sizes.push(size);
        // A kill under a limit the replay had already grown past would not have happened.
        let killed = ooms
            .get(i)
            .copied()
            .flatten()
            .is_some_and(|limit| size <= limit);
        let resize = if killed {
            steward.oom(at, size)
        } else {
            steward.step(at, used, size)
        };
        if let Some(r) = resize.filter(|r| r.to != size) {
            changes.push(change(
                at,
                knob,
                size,
                r.to,
                used.map(|u| u / size),
                r.reason,
                &mut tally,
            ));
            size = r.to;
        }
    }
    Track {
        policy: "steward",
        summary: tally.finish(),
        changes,
        sizes,
    }
}

fn replay_disk(
    mut disk: StewardDisk,
    knob: &str,
    times: &[Timestamp],
    used: &[Option<f64>],
    wal: &[Option<f64>],
    initial: f64,
    limits: Limits,
) -> Track {
    let mut tally = Tally::new(limits, hours_unit(Resource::Disk));
    let (mut size, mut changes, mut sizes) = (initial, Vec::new(), Vec::new());
    for (i, &at) in times.iter().enumerate() {
        tally.interval(interval_secs(times, i), used[i], size);
        sizes.push(size);
        if let Some(r) = disk.step_with_wal(at, used[i], wal[i], size) {
            changes.push(change(
                at,
                knob,
                size,
                r.to,
                used[i].map(|u| u / size),
                r.reason,
                &mut tally,
            ));
            size = r.to;
        }
    }
    Track {
        policy: "steward",
        summary: tally.finish(),
        changes,
        sizes,
    }
}

/// The database members' recorded CPU in members' worth (`sum of cpu_used / cpus`) at each
/// observation; `None` where a member lacks either figure.
fn demand(observations: &[Observation]) -> Vec<Option<f64>> {
    observations
        .iter()
        .map(|o| {
            o.members_of(Role::Database)
                .map(|m| {
                    let used = m.cpu_used.map(|f| f.value)?;
                    let cpus = m.size.map(|s| s.cpus).filter(|c| *c > 0.0)?;
                    Some(used / cpus)
                })
                .sum::<Option<f64>>()
        })
        .collect()
}

/// The replicas' recorded CPU in replicas' worth (`sum of cpu_used / cpus` over the database
/// members that are not the leader) at each observation; `None` where a replica lacks either
/// figure or no leader was recorded.
fn reads(observations: &[Observation]) -> Vec<Option<f64>> {
    observations
        .iter()
        .map(|o| {
            o.members_of(Role::Database)
                .any(|m| m.patroni_role == Some(PatroniRole::Leader))
                .then(|| {
                    o.members_of(Role::Database)
                        .filter(|m| m.patroni_role != Some(PatroniRole::Leader))
                        .map(|m| {
                            let used = m.cpu_used.map(|f| f.value)?;
                            let cpus = m.size.map(|s| s.cpus).filter(|c| *c > 0.0)?;
                            Some(used / cpus)
                        })
                        .sum::<Option<f64>>()
                })
                .flatten()
        })
        .collect()
}

/// The replicas' utilization with `count` members in all: `reads` over `count - 1` replicas.
fn replica_utilization(reads: Option<f64>, count: f64) -> Option<f64> {
    reads.filter(|_| count > 1.0).map(|r| r / (count - 1.0))
}

/// A baseline on the replica count: it decides on `demand` (every member's CPU, as it would
/// live), and is scored on the replicas' utilization ([`replica_utilization`]).
fn replay_count(
    sizer: &mut dyn Sizer,
    times: &[Timestamp],
    demand: &[Option<f64>],
    reads: &[Option<f64>],
    initial: f64,
    limits: Limits,
) -> Track {
    let mut tally = Tally::new(limits, 1.0);
    let mut count = initial;
    let mut changes = Vec::new();
    for (i, &at) in times.iter().enumerate() {
        let utilization = replica_utilization(reads[i], count);
        tally.interval_scored(interval_secs(times, i), demand[i], utilization, count);
        if let Some(resize) = sizer.step(at, demand[i], count).filter(|r| r.to != count) {
            changes.push(Change {
                at,
                policy: sizer.name(),
                knob: "database.replicas".to_string(),
                action: tally.resize(count, resize.to),
                from: count,
                to: resize.to,
                utilization,
                reason: resize.reason,
            });
            count = resize.to;
        }
    }
    Track {
        policy: sizer.name(),
        summary: tally.finish(),
        changes,
        sizes: Vec::new(),
    }
}

/// The replica count's band and bounds: the replica CPU band, its middle as the target (the
/// HPA's), the HA minimum and the most members, one member a step.
fn replica_limits(config: &ReplicaConfig) -> Limits {
    Limits {
        low: config.cpu.low,
        high: config.cpu.high,
        target: (config.cpu.low + config.cpu.high) / 2.0,
        min: f64::from(config.min_members),
        max: f64::from(config.max_members),
        step: 1.0,
    }
}

/// What `recorded` would have looked like with `count` database members: the leader as it
/// was, the replicas' reads (CPU, connections, read rate) spread evenly over `count - 1`
/// replicas, as HAProxy's least-busy routing of the read port spreads them; a replica's CPU
/// never above its vCPUs. Replicas beyond the recorded ones are copies of the recorded ones
/// (named `<name>+<k>`); fewer keep the first recorded. The recorded observation as it is when
/// the count is the recorded one, when no leader or no replica was recorded, or when a figure
/// it would spread is missing on a replica (missing is not zero: that figure stays missing).
fn respread(recorded: &Observation, count: usize) -> Observation {
    let databases: Vec<&MemberObservation> = recorded.members_of(Role::Database).collect();
    let leader = databases
        .iter()
        .position(|m| m.patroni_role == Some(PatroniRole::Leader));
    let replicas: Vec<&MemberObservation> = databases
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != leader)
        .map(|(_, m)| *m)
        .collect();
    if count == databases.len() || leader.is_none() || replicas.is_empty() || count < 2 {
        return recorded.clone();
    }
    // The sum over the replicas, and the first one's figure to keep its source and time.
    let total = |figure: fn(&MemberObservation) -> Option<Figure>| {
        let sum = replicas
            .iter()
            .map(|m| figure(m).map(|f| f.value))
            .sum::<Option<f64>>()?;
        Some((sum, figure(replicas[0])?))
    };
    let cpu = total(|m| m.cpu_used);
    let connections = total(|m| m.connections);
    let reads = total(|m| m.read_rate);
    let n = count - 1;
    let share = |total: Option<(f64, Figure)>, cap: Option<f64>| {
        total.map(|(sum, f)| Figure {
            value: cap.map_or(sum / n as f64, |c| (sum / n as f64).min(c)),
            ..f
        })
    };
    let mut out = Observation {
        members: recorded
            .members
            .iter()
            .filter(|m| {
                m.role != Some(Role::Database) || m.patroni_role == Some(PatroniRole::Leader)
            })
            .cloned()
            .collect(),
        ..recorded.clone()
    };
    for k in 0..n {
        let model = replicas[k % replicas.len()];
        let mut m = model.clone();
        if k >= replicas.len() {
            m.name = format!("{}+{}", model.name, k / replicas.len());
        }
        m.cpu_used = share(cpu, model.size.map(|s| s.cpus).filter(|c| *c > 0.0));
        m.connections = share(connections, None);
        m.read_rate = share(reads, None);
        out.members.push(m);
    }
    out
}

/// The replica count: the recorded observations, and the count the policy believes it set,
/// scored on `demand` spread over that count. `resource_hours` is member-hours.
fn replay_replicas(
    mut policy: ReplicaPolicy,
    observations: &[Observation],
    demand: &[Option<f64>],
    reads: &[Option<f64>],
    limits: Limits,
) -> Track {
    let times: Vec<Timestamp> = observations.iter().map(|o| o.at).collect();
    let mut tally = Tally::new(limits, 1.0);
    let mut count = observations[0].members_of(Role::Database).count() as f64;
    let mut changes = Vec::new();
    for (i, recorded) in observations.iter().enumerate() {
        let utilization = replica_utilization(reads[i], count);
        tally.interval_scored(interval_secs(&times, i), demand[i], utilization, count);
        let o = &respread(recorded, count as usize);
        let d = policy.decide(o.at, o);
        if d.decision.changes() && d.decision.target != count {
            let mut reason = reason_of(&d.decision);
            if let Some(name) = &d.remove {
                reason = format!("{reason} (remove {name})");
            }
            changes.push(Change {
                at: o.at,
                policy: "steward",
                knob: "database.replicas".to_string(),
                action: tally.resize(count, d.decision.target),
                from: count,
                to: d.decision.target,
                utilization: d.decision.statistic,
                reason,
            });
            count = d.decision.target;
            policy.record_change(o.at, count as u32);
        }
    }
    Track {
        policy: "steward",
        summary: tally.finish(),
        changes,
        sizes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_model::observation::Source as FigureSource;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn member(name: &str, leader: bool, cpu: Option<f64>, at: Timestamp) -> MemberObservation {
        let figure = |v: f64| Figure::new(v, FigureSource::Recorded, at);
        MemberObservation {
            name: name.into(),
            role: Some(Role::Database),
            patroni_role: Some(if leader {
                PatroniRole::Leader
            } else {
                PatroniRole::Replica
            }),
            cpu_used: cpu.map(figure),
            connections: Some(figure(if leader { 10.0 } else { 30.0 })),
            read_rate: (!leader).then(|| figure(600.0)),
            size: Some(Size {
                cpus: 2.0,
                memory_bytes: 4 * 1024 * 1024 * 1024,
                disk_bytes: 0,
            }),
            ..MemberObservation::default()
        }
    }

    fn observation(replicas: &[Option<f64>]) -> Observation {
        let at = Timestamp::from_secs(1_000);
        let mut members = vec![member("pg-1", true, Some(0.5), at)];
        for (i, cpu) in replicas.iter().enumerate() {
            members.push(member(&format!("pg-{}", i + 2), false, *cpu, at));
        }
        Observation {
            at,
            cluster: "c".into(),
            members,
            notes: Vec::new(),
            slots: Vec::new(),
        }
    }

    fn figures(o: &Observation, f: fn(&MemberObservation) -> Option<Figure>) -> Vec<Option<f64>> {
        o.members_of(Role::Database)
            .map(|m| f(m).map(|x| x.value))
            .collect()
    }

    #[test]
    fn respread_spreads_the_replicas_reads_over_the_count_held() {
        let recorded = observation(&[Some(1.2), Some(0.6)]);
        // The recorded count: as recorded.
        assert_eq!(respread(&recorded, 3), recorded);
        // Four members: the leader as recorded, 1.8 vCPU of reads over three replicas.
        let four = respread(&recorded, 4);
        let names: Vec<&str> = four.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["pg-1", "pg-2", "pg-3", "pg-2+1"]);
        let cpu = figures(&four, |m| m.cpu_used);
        assert_eq!(cpu[0], Some(0.5));
        for c in &cpu[1..] {
            assert!((c.unwrap() - 0.6).abs() < 1e-9, "{cpu:?}");
        }
        assert_eq!(figures(&four, |m| m.connections)[1..], [Some(20.0); 3]);
        assert_eq!(figures(&four, |m| m.read_rate)[1..], [Some(400.0); 3]);
        // Two members: one replica takes all the reads, but never more than its vCPUs.
        let heavy = observation(&[Some(1.5), Some(1.5)]);
        let two = respread(&heavy, 2);
        assert_eq!(figures(&two, |m| m.cpu_used), [Some(0.5), Some(2.0)]);
        assert_eq!(figures(&two, |m| m.connections), [Some(10.0), Some(60.0)]);
    }

    #[test]
    fn respread_keeps_a_missing_figure_missing_and_needs_a_leader() {
        let recorded = observation(&[Some(1.2), None]);
        let four = respread(&recorded, 4);
        assert_eq!(
            figures(&four, |m| m.cpu_used),
            [Some(0.5), None, None, None]
        );
        // Connections were recorded on both replicas: they are spread.
        assert_eq!(figures(&four, |m| m.connections)[1..], [Some(20.0); 3]);
        let mut leaderless = observation(&[Some(1.2), Some(0.6)]);
        leaderless.members[0].patroni_role = Some(PatroniRole::Replica);
        assert_eq!(respread(&leaderless, 4), leaderless);
    }

    #[test]
    fn the_replica_score_is_the_replicas_reads_over_the_replicas_held() {
        let o = observation(&[Some(1.2), Some(0.6)]);
        let reads = reads(std::slice::from_ref(&o));
        // 0.6 + 0.3 replicas' worth of reads.
        assert!((reads[0].unwrap() - 0.9).abs() < 1e-9, "{reads:?}");
        assert_eq!(replica_utilization(reads[0], 4.0), Some(0.3));
        assert_eq!(replica_utilization(reads[0], 1.0), None);
        let missing = observation(&[Some(1.2), None]);
        assert_eq!(super::reads(&[missing]), [None]);
    }

    fn vertical_memory(initial: f64, ooms: &[Option<f64>]) -> Track {
        let config = PolicyConfig::default().database.memory.clone();
        let limits = steward::limits_of(&config);
        let mut steward = StewardVertical::new(Role::Database, Resource::Memory, config, true)
            .with_oom(PolicyConfig::default().database.oom.clone());
        let times: Vec<Timestamp> = (0..ooms.len() as i64)
            .map(|i| Timestamp::from_secs(i * 60))
            .collect();
        // A working set of 60 % of 4 GiB: inside the band, no resize but for the kill.
        let usage = vec![Some(0.6 * 4.0 * GIB); ooms.len()];
        replay_vertical(
            &mut steward,
            "database.memory",
            &times,
            &usage,
            ooms,
            initial,
            limits,
            GIB,
        )
    }

    #[test]
    fn a_recorded_oom_kill_grows_memory_at_once_unless_the_replay_is_past_its_limit() {
        let mut ooms = vec![None; 10];
        ooms[3] = Some(4.0 * GIB);
        let track = vertical_memory(4.0 * GIB, &ooms);
        assert_eq!(track.changes.len(), 1, "{:?}", track.changes);
        let grow = &track.changes[0];
        assert_eq!(grow.at, Timestamp::from_secs(180));
        assert_eq!(grow.action, steward_model::Action::Grow);
        assert!(grow.reason.contains("OOM kill"), "{}", grow.reason);
        // The replay already holds 5 GiB: a kill under 4 GiB would not have happened.
        let track = vertical_memory(5.0 * GIB, &ooms);
        assert!(track.changes.is_empty(), "{:?}", track.changes);
    }

    #[test]
    fn oom_kills_are_the_counter_going_up_per_member() {
        let at = |s| Timestamp::from_secs(s);
        let o = |secs, counts: [f64; 2]| {
            let mut o = observation(&[Some(0.5)]);
            o.at = at(secs);
            for (m, c) in o.members.iter_mut().zip(counts) {
                m.oom_kills = Some(Figure::new(c, FigureSource::Recorded, at(secs)));
            }
            o
        };
        let observations = [
            o(0, [2.0, 0.0]),
            o(60, [2.0, 1.0]),
            o(120, [2.0, 1.0]),
            o(180, [3.0, 1.0]),
        ];
        assert_eq!(
            oom_kills(&observations, Role::Database),
            [None, Some(4.0 * GIB), None, Some(4.0 * GIB)]
        );
    }
}
