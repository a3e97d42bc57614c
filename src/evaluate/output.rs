//! What `steward evaluate` prints: the decision timeline and the summary table, as text for
//! people or as one JSON object for scripts; for several traces, the scorecard: a row per trace
//! and policy and a sum row per policy.
//!
//! What this is: rendering of a finished [`Report`]. What it is not: any computation; every
//! figure printed here was counted by the replay.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use steward_model::size::human_amount;
use steward_model::{Resource, Timestamp};

use super::replay::{Change, Summary};
use super::sizer::Limits;

/// What was read.
#[derive(Clone, Debug, Serialize)]
pub struct InputInfo {
    pub file: String,
    /// `csv` or `jsonl`.
    pub format: &'static str,
    /// Samples (CSV rows or JSONL observations) replayed.
    pub samples: usize,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Bad rows skipped under `--skip-bad`.
    pub skipped: usize,
    /// Their line numbers (the first 100).
    pub skipped_lines: Vec<u64>,
}

/// One knob's results: every policy's score, side by side.
#[derive(Clone, Debug, Serialize)]
pub struct KnobReport {
    /// `role.resource` or `database.replicas`.
    pub knob: String,
    /// `None` for the replica count.
    #[serde(skip)]
    pub resource: Option<Resource>,
    /// The band and bounds every policy of this knob used (for the replica count: the replica
    /// CPU band and the member bounds; absent for a disk's recording without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// The size at the start.
    pub initial: f64,
    /// Policy name -> score, in the order run.
    pub policies: Vec<(&'static str, Summary)>,
}

/// A whole evaluation.
#[derive(Clone, Debug)]
pub struct Report {
    pub input: InputInfo,
    pub knobs: Vec<KnobReport>,
    /// Resizes of the policies the timeline shows, in time order.
    pub timeline: Vec<Change>,
}

/// The JSON shape. For a CSV (one knob) `summary` maps policy -> score, which is what the
/// acceptance checks read (`summary.steward.changes`); for a recording (many knobs) it maps
/// knob -> policy -> score.
#[derive(Serialize)]
struct Json<'a> {
    input: &'a InputInfo,
    knobs: Vec<JsonKnob<'a>>,
    summary: serde_json::Value,
    timeline: &'a [Change],
}

#[derive(Serialize)]
struct JsonKnob<'a> {
    knob: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Limits>,
    initial: f64,
}

/// `summary`: policy -> score for one knob (`flat`), else knob -> policy -> score.
fn summary_value(
    knobs: &[(&KnobReport, Vec<(&'static str, Summary)>)],
    flat: bool,
) -> serde_json::Result<serde_json::Value> {
    let map = |policies: &[(&'static str, Summary)]| -> BTreeMap<&'static str, Summary> {
        policies.iter().map(|(name, s)| (*name, *s)).collect()
    };
    if flat && knobs.len() == 1 {
        serde_json::to_value(map(&knobs[0].1))
    } else {
        let by_knob: BTreeMap<&str, BTreeMap<&'static str, Summary>> = knobs
            .iter()
            .map(|(k, policies)| (k.knob.as_str(), map(policies)))
            .collect();
        serde_json::to_value(by_knob)
    }
}

fn json_knobs(report: &Report) -> Vec<JsonKnob<'_>> {
    report
        .knobs
        .iter()
        .map(|k| JsonKnob {
            knob: &k.knob,
            limits: k.limits,
            initial: k.initial,
        })
        .collect()
}

fn report_value(report: &Report, flat: bool) -> serde_json::Result<serde_json::Value> {
    let knobs: Vec<(&KnobReport, Vec<(&'static str, Summary)>)> = report
        .knobs
        .iter()
        .map(|k| (k, k.policies.clone()))
        .collect();
    serde_json::to_value(Json {
        input: &report.input,
        knobs: json_knobs(report),
        summary: summary_value(&knobs, flat)?,
        timeline: &report.timeline,
    })
}

/// Writes the report as one JSON object and a newline.
pub fn write_json(report: &Report, flat: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let json = report_value(report, flat).map_err(std::io::Error::other)?;
    serde_json::to_writer(&mut *out, &json).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// Per knob (the first report's, in its order), each policy's score summed over `reports`
/// ([`Summary::total`]). The reports of one scorecard share their knobs and policies.
pub fn sums(reports: &[Report]) -> Vec<(&KnobReport, Vec<(&'static str, Summary)>)> {
    let Some(first) = reports.first() else {
        return Vec::new();
    };
    first
        .knobs
        .iter()
        .map(|knob| {
            let policies = knob
                .policies
                .iter()
                .map(|(name, _)| {
                    let each = reports
                        .iter()
                        .flat_map(|r| r.knobs.iter().filter(|k| k.knob == knob.knob))
                        .flat_map(|k| k.policies.iter().filter(|(n, _)| n == name))
                        .map(|(_, s)| s);
                    (*name, Summary::total(each))
                })
                .collect();
            (knob, policies)
        })
        .collect()
}

/// A trace's name for tables: a file's stem (`ec2_cpu_utilization_5f5533`), a synthetic
/// trace's or recording's own name (`synthetic:diurnal:3`, `synthetic-cluster:diurnal:3`).
pub fn short_name(file: &str) -> String {
    if file.starts_with("synthetic:") || file.starts_with("synthetic-cluster:") {
        return file.to_string();
    }
    std::path::Path::new(file)
        .file_stem()
        .map_or_else(|| file.to_string(), |s| s.to_string_lossy().into_owned())
}

/// The scorecard as one JSON object: `traces` holds each trace's own report (as `write_json`
/// would print it alone); `summary.<policy>.<figure>` is the sum over the traces (by knob when
/// the traces have several); `knobs` the band and bounds they share.
pub fn write_scorecard_json(reports: &[Report], out: &mut dyn Write) -> std::io::Result<()> {
    let traces = reports
        .iter()
        .map(|r| report_value(r, true))
        .collect::<serde_json::Result<Vec<_>>>()
        .map_err(std::io::Error::other)?;
    let summary = summary_value(&sums(reports), true).map_err(std::io::Error::other)?;
    let json = serde_json::json!({
        "traces": traces,
        "knobs": reports.first().map(json_knobs),
        "sum_of": reports.len(),
        "summary": summary,
    });
    serde_json::to_writer(&mut *out, &json).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// The scorecard for people: each trace's timeline (when asked), then per knob one table, a row
/// per trace and policy, and the sum rows.
pub fn write_scorecard_text(reports: &[Report], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "scorecard of {} traces", reports.len())?;
    for r in reports {
        let i = &r.input;
        write!(
            out,
            "  {}: {} samples from {} to {}",
            i.file, i.samples, i.from, i.to
        )?;
        if i.skipped > 0 {
            write!(out, ", {} bad rows skipped", i.skipped)?;
        }
        writeln!(out)?;
    }
    for r in reports.iter().filter(|r| !r.timeline.is_empty()) {
        writeln!(out)?;
        writeln!(
            out,
            "timeline of {} ({} changes)",
            short_name(&r.input.file),
            r.timeline.len()
        )?;
        write_timeline(r, out)?;
    }
    let sums = sums(reports);
    let width = reports
        .iter()
        .map(|r| short_name(&r.input.file).len())
        .chain(std::iter::once(
            format!("sum of {} traces", reports.len()).len(),
        ))
        .max()
        .unwrap_or(5);
    for (knob, total) in &sums {
        writeln!(out)?;
        write_knob_heading(knob, out)?;
        write!(out, "  {:<width$} ", "trace")?;
        write_columns(knob, out)?;
        for r in reports {
            let Some(k) = r.knobs.iter().find(|k| k.knob == knob.knob) else {
                continue;
            };
            let name = short_name(&r.input.file);
            for (i, (policy, s)) in k.policies.iter().enumerate() {
                let label = if i == 0 { name.as_str() } else { "" };
                write!(out, "  {label:<width$} ")?;
                write_row(k.resource, policy, s, out)?;
            }
        }
        let label = format!("sum of {} traces", reports.len());
        for (i, (policy, s)) in total.iter().enumerate() {
            let label = if i == 0 { label.as_str() } else { "" };
            write!(out, "  {label:<width$} ")?;
            write_row(knob.resource, policy, s, out)?;
        }
    }
    Ok(())
}

fn amount(resource: Option<Resource>, value: f64) -> String {
    match resource {
        Some(r) => human_amount(r, value),
        None => format!("{value:.0} members"),
    }
}

/// Writes the report for people: the timeline, then a table per knob.
pub fn write_text(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let i = &report.input;
    writeln!(
        out,
        "{}: {} samples from {} to {}",
        i.file, i.samples, i.from, i.to
    )?;
    if i.skipped > 0 {
        let lines: Vec<String> = i.skipped_lines.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "skipped {} bad rows (lines {})",
            i.skipped,
            lines.join(", ")
        )?;
    }
    writeln!(out)?;
    writeln!(out, "timeline ({} changes)", report.timeline.len())?;
    write_timeline(report, out)?;
    for k in &report.knobs {
        writeln!(out)?;
        write_knob_heading(k, out)?;
        write!(out, "  ")?;
        write_columns(k, out)?;
        for (name, s) in &k.policies {
            write!(out, "  ")?;
            write_row(k.resource, name, s, out)?;
        }
    }
    Ok(())
}

fn write_timeline(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let resources: BTreeMap<&str, Option<Resource>> = report
        .knobs
        .iter()
        .map(|k| (k.knob.as_str(), k.resource))
        .collect();
    for c in &report.timeline {
        let resource = resources.get(c.knob.as_str()).copied().flatten();
        writeln!(
            out,
            "  {}  {:<8} {:<18} {:<6} {} -> {}  (utilization {})  {}",
            c.at,
            c.policy,
            c.knob,
            c.action.to_string(),
            amount(resource, c.from),
            amount(resource, c.to),
            c.utilization
                .map_or("unknown".to_string(), |u| format!("{u:.2}")),
            c.reason
        )?;
    }
    Ok(())
}

fn write_knob_heading(k: &KnobReport, out: &mut dyn Write) -> std::io::Result<()> {
    match &k.limits {
        Some(l) => writeln!(
            out,
            "{}: from {}, band [{:.2}, {:.2}], target {:.2}, bounds [{}, {}], step {}",
            k.knob,
            amount(k.resource, k.initial),
            l.low,
            l.high,
            l.target,
            amount(k.resource, l.min),
            amount(k.resource, l.max),
            amount(k.resource, l.step)
        ),
        None => writeln!(out, "{}: from {}", k.knob, amount(None, k.initial)),
    }
}

fn write_columns(k: &KnobReport, out: &mut dyn Write) -> std::io::Result<()> {
    let hours = match k.resource {
        Some(Resource::Cpu) => "vCPU-hours",
        Some(_) => "GiB-hours",
        None => "member-hours",
    };
    writeln!(
        out,
        "{:<8} {:>8} {:>6} {:>15} {:>14} {:>13} {:>6} {:>11} {:>10}  final size",
        "policy",
        "changes",
        "flaps",
        "min above high",
        "min below low",
        hours,
        "slack",
        "changes/day",
        "peak util"
    )
}

fn write_row(
    resource: Option<Resource>,
    name: &str,
    s: &Summary,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<8} {:>8} {:>6} {:>15.0} {:>14.0} {:>13.1} {:>6} {:>11.2} {:>10.2}  {}",
        name,
        s.changes,
        s.direction_changes,
        s.minutes_above_high,
        s.minutes_below_low,
        s.resource_hours,
        s.slack.map_or("-".to_string(), |x| format!("{x:.2}")),
        s.changes_per_day,
        s.peak_utilization,
        if s.final_size.is_nan() {
            "-".to_string()
        } else {
            amount(resource, s.final_size)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_model::Action;

    fn report() -> Report {
        let summary = Summary {
            changes: 3,
            direction_changes: 1,
            resource_hours: 12.5,
            ..Summary::default()
        };
        Report {
            input: InputInfo {
                file: "t.csv".into(),
                format: "csv",
                samples: 10,
                from: Timestamp::from_secs(0),
                to: Timestamp::from_secs(2700),
                skipped: 0,
                skipped_lines: vec![],
            },
            knobs: vec![KnobReport {
                knob: "database.cpu".into(),
                resource: Some(Resource::Cpu),
                limits: Some(Limits {
                    low: 0.3,
                    high: 0.8,
                    target: 0.6,
                    min: 0.5,
                    max: 8.0,
                    step: 0.5,
                }),
                initial: 2.0,
                policies: vec![
                    ("steward", summary),
                    (
                        "hpa",
                        Summary {
                            changes: 7,
                            ..summary
                        },
                    ),
                ],
            }],
            timeline: vec![Change {
                at: Timestamp::from_secs(300),
                policy: "steward",
                knob: "database.cpu".into(),
                action: Action::Grow,
                from: 2.0,
                to: 3.0,
                utilization: Some(0.9),
                reason: "above high".into(),
            }],
        }
    }

    #[test]
    fn json_summary_is_flat_for_one_knob() {
        let mut out = Vec::new();
        write_json(&report(), true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["summary"]["steward"]["changes"], 3);
        assert_eq!(v["summary"]["hpa"]["changes"], 7);
        assert_eq!(v["summary"]["hpa"]["resource_hours"], 12.5);
        assert_eq!(v["timeline"][0]["action"], "grow");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn json_summary_is_by_knob_for_recordings() {
        let mut out = Vec::new();
        write_json(&report(), false, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["summary"]["database.cpu"]["steward"]["direction_changes"],
            1
        );
    }

    #[test]
    fn text_has_the_timeline_and_a_row_per_policy() {
        let mut out = Vec::new();
        write_text(&report(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("2.00 vCPU -> 3.00 vCPU"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("hpa") && l.contains(" 7 ")),
            "{text}"
        );
    }
}
