//! What `steward evaluate` prints: the decision timeline and the summary table, as text for
//! people or as one JSON object for scripts.
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
    /// The band and bounds every policy of this knob used (absent for the replica count).
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

fn policies_map(k: &KnobReport) -> BTreeMap<&'static str, Summary> {
    k.policies.iter().map(|(name, s)| (*name, *s)).collect()
}

/// Writes the report as one JSON object and a newline.
pub fn write_json(report: &Report, flat: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let summary = if flat && report.knobs.len() == 1 {
        serde_json::to_value(policies_map(&report.knobs[0]))
    } else {
        let by_knob: BTreeMap<&str, BTreeMap<&'static str, Summary>> = report
            .knobs
            .iter()
            .map(|k| (k.knob.as_str(), policies_map(k)))
            .collect();
        serde_json::to_value(by_knob)
    }
    .map_err(std::io::Error::other)?;
    let json = Json {
        input: &report.input,
        knobs: report
            .knobs
            .iter()
            .map(|k| JsonKnob {
                knob: &k.knob,
                limits: k.limits,
                initial: k.initial,
            })
            .collect(),
        summary,
        timeline: &report.timeline,
    };
    serde_json::to_writer(&mut *out, &json).map_err(std::io::Error::other)?;
    writeln!(out)
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
    let resources: BTreeMap<&str, Option<Resource>> = report
        .knobs
        .iter()
        .map(|k| (k.knob.as_str(), k.resource))
        .collect();
    writeln!(out, "timeline ({} changes)", report.timeline.len())?;
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
    for k in &report.knobs {
        writeln!(out)?;
        let hours = match k.resource {
            Some(Resource::Cpu) => "vCPU-hours",
            Some(_) => "GiB-hours",
            None => "member-hours",
        };
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
            )?,
            None => writeln!(out, "{}: from {}", k.knob, amount(None, k.initial))?,
        }
        writeln!(
            out,
            "  {:<8} {:>8} {:>6} {:>15} {:>14} {:>13} {:>10}  final size",
            "policy", "changes", "flaps", "min above high", "min below low", hours, "peak util"
        )?;
        for (name, s) in &k.policies {
            writeln!(
                out,
                "  {:<8} {:>8} {:>6} {:>15.0} {:>14.0} {:>13.1} {:>10.2}  {}",
                name,
                s.changes,
                s.direction_changes,
                s.minutes_above_high,
                s.minutes_below_low,
                s.resource_hours,
                s.peak_utilization,
                amount(k.resource, s.final_size)
            )?;
        }
    }
    Ok(())
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
