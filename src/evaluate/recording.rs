//! `steward evaluate --jsonl`: a recording of whole observations through every policy.
//!
//! What this is: per role, vertical CPU and memory (the busiest member's usage, since members of
//! one role share one size), the data disk, and for the databases the replica count; with the
//! baselines beside the vertical knobs and (HPA, naive, fixed) beside the replica count. What
//! it is not: a model of how load would move had the member count changed; the recorded
//! members are replayed as they were, and the replica policy's own count is what it believes
//! after its decisions.
//!
//! The replica count's score: the database members' recorded CPU, in members' worth
//! (`sum of cpu_used / cpus`, the demand), spread over the count a policy holds: utilization
//! `demand / count`, against the replica CPU band. That is the HPA's own view (its replica
//! formula `ceil(count x utilization / target)` is `ceil(demand / target)`, whatever the count),
//! with the band's middle as its target. Steward's replica policy decides on the recorded
//! members (replica CPU and connections), as it would live; both are scored on the same demand.
//! An observation where any database member lacks its CPU or size has no demand (missing is not
//! zero): it counts member-hours, no band minutes, and the HPA skips it.
//!
//! A history read from Prometheus (`--prometheus`) is replayed here too: [`super::prometheus`]
//! turns it into the same records, so both inputs run exactly the same code from the
//! observations on.

use std::path::Path;

use steward_model::observation::{MemberObservation, Observation};
use steward_model::{Resource, Role, Timestamp};
use steward_policies::replicas::ReplicaPolicy;
use steward_policies::PolicyConfig;

use super::output::{InputInfo, KnobReport, Report};
use super::prometheus::{self as history, Facts, Span};
use super::replay::{interval_secs, replay, Change, Tally, Track};
use super::sizer::{Limits, Sizer};
use super::steward::{self, reason_of, StewardDisk, StewardVertical};
use super::{baselines, hours_unit, input, input_info, open, parse_amount, timeline, EvaluateArgs};
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

/// Whether any member of `role` counted a new OOM kill since the previous observation.
fn oom_kills(observations: &[Observation], role: Role) -> Vec<bool> {
    let mut last: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    observations
        .iter()
        .map(|o| {
            let mut killed = false;
            for m in o.members_of(role) {
                if let Some(count) = m.oom_kills.map(|f| f.value) {
                    if last
                        .insert(&m.name, count)
                        .is_some_and(|before| count > before)
                    {
                        killed = true;
                    }
                }
            }
            killed
        })
        .collect()
}

pub(super) fn evaluate_jsonl(
    args: &EvaluateArgs,
    path: &Path,
    policy: &PolicyConfig,
) -> anyhow::Result<Report> {
    let recording = input::read_jsonl(open(path)?, &path.display().to_string(), args.skip_bad)?;
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
    evaluate_observations(args, observations, policy, info)
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
    evaluate_observations(args, &observations, policy, info)
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
        let limits = replica_limits(&policy.replicas);
        let initial = observations[0].members_of(Role::Database).count() as f64;
        let mut replica_tracks = vec![replay_replicas(
            ReplicaPolicy::new(policy.replicas.clone()),
            observations,
            &demand,
            limits,
        )];
        for mut sizer in baselines(args.baseline, limits, None, &times, &demand) {
            replica_tracks.push(replay(
                sizer.as_mut(),
                "database.replicas",
                &times,
                &demand,
                initial,
                limits,
                1.0,
                false,
                &mut |_| {},
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
        timeline: timeline(&tracks, args.timeline.unwrap_or(super::Timeline::Steward)),
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

/// Like [`replay`], plus the OOM emergency path: a new OOM kill grows memory at once.
#[allow(clippy::too_many_arguments)]
fn replay_vertical(
    steward: &mut StewardVertical,
    knob: &str,
    times: &[Timestamp],
    usage: &[Option<f64>],
    ooms: &[bool],
    initial: f64,
    limits: Limits,
    unit: f64,
) -> Track {
    let mut tally = Tally::new(limits, unit);
    let (mut size, mut changes, mut sizes) = (initial, Vec::new(), Vec::new());
    for (i, (&at, &used)) in times.iter().zip(usage).enumerate() {
        tally.interval(interval_secs(times, i), used, size);
        sizes.push(size);
        let resize = if ooms.get(i).copied().unwrap_or(false) {
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

/// The replica count: the recorded observations, and the count the policy believes it set,
/// scored on `demand` spread over that count. `resource_hours` is member-hours.
fn replay_replicas(
    mut policy: ReplicaPolicy,
    observations: &[Observation],
    demand: &[Option<f64>],
    limits: Limits,
) -> Track {
    let times: Vec<Timestamp> = observations.iter().map(|o| o.at).collect();
    let mut tally = Tally::new(limits, 1.0);
    let mut count = observations[0].members_of(Role::Database).count() as f64;
    let mut changes = Vec::new();
    for (i, o) in observations.iter().enumerate() {
        tally.interval(interval_secs(&times, i), demand[i], count);
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
