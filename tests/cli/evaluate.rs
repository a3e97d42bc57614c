//! `steward evaluate` as a user runs it: the acceptance interface, errors, chart, recordings.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> String {
    root()
        .join("tests/data/evaluate")
        .join(name)
        .display()
        .to_string()
}

fn steward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("evaluate")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8");
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one JSON object on one line: {text}"
    );
    serde_json::from_str(&text).expect("stdout is JSON")
}

#[test]
fn the_acceptance_command_prints_one_summary_per_policy() {
    let trace = root()
        .join("examples/traces/rds_cpu_utilization_cc0c53.csv")
        .display()
        .to_string();
    let out = steward(&[
        "--csv",
        &trace,
        "--role",
        "database",
        "--resource",
        "cpu",
        "--size",
        "2",
        "--baseline",
        "all",
        "--format",
        "json",
    ]);
    let v = json_of(&out);
    for policy in ["steward", "hpa", "naive"] {
        for field in [
            "changes",
            "direction_changes",
            "minutes_above_high",
            "minutes_below_low",
            "resource_hours",
        ] {
            assert!(
                v["summary"][policy][field].is_number(),
                "summary.{policy}.{field} in {v}"
            );
        }
        // Two weeks at 2 vCPU or less (the trace is mostly idle): fewer than 14 x 24 x 2 hours.
        let hours = v["summary"][policy]["resource_hours"].as_f64().unwrap();
        assert!(
            hours > 0.0 && hours < 14.0 * 24.0 * 2.0 + 1.0,
            "{policy}: {hours}"
        );
    }
    assert_eq!(v["input"]["samples"], 4032);
}

#[test]
fn a_surge_is_met_with_fewer_changes_than_the_naive_rule() {
    let out = steward(&[
        "--csv",
        &data("surge.csv"),
        "--size",
        "2",
        "--baseline",
        "all",
        "--format",
        "json",
    ]);
    let v = json_of(&out);
    let steward = v["summary"]["steward"]["changes"].as_u64().unwrap();
    let naive = v["summary"]["naive"]["changes"].as_u64().unwrap();
    assert!(steward >= 1, "the surge at 95 % must grow the size: {v}");
    assert!(steward <= naive, "steward {steward} vs naive {naive}");
    let grows: Vec<&Value> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "grow")
        .collect();
    assert!(
        !grows.is_empty() && grows.iter().all(|c| c["policy"] == "steward"),
        "{v}"
    );
}

#[test]
fn memory_sizes_take_human_units() {
    let out = steward(&[
        "--csv",
        &data("surge.csv"),
        "--resource",
        "memory",
        "--size",
        "4GiB",
        "--format",
        "json",
    ]);
    let v = json_of(&out);
    assert_eq!(
        v["knobs"][0]["initial"].as_f64(),
        Some(4.0 * 1024f64.powi(3))
    );
    assert!(v["summary"]["steward"]["resource_hours"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_malformed_row_is_an_error_naming_file_and_line() {
    let out = steward(&["--csv", &data("bad_value.csv"), "--size", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad_value.csv, line 3") && err.contains("forty"),
        "{err}"
    );
}

#[test]
fn skip_bad_counts_and_reports_the_skipped_rows() {
    let out = steward(&[
        "--csv",
        &data("bad_value.csv"),
        "--size",
        "2",
        "--skip-bad",
        "--format",
        "json",
    ]);
    let v = json_of(&out);
    assert_eq!(v["input"]["skipped"], 1);
    assert_eq!(v["input"]["skipped_lines"][0], 3);
    assert_eq!(v["input"]["samples"], 2);
}

#[test]
fn unsorted_and_empty_inputs_are_clear_errors() {
    let out = steward(&["--csv", &data("unsorted.csv"), "--size", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unsorted.csv, line 4") && err.contains("sorted"),
        "{err}"
    );
    let out = steward(&["--csv", &data("header_only.csv"), "--size", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("header_only.csv holds no samples"),
        "{err}"
    );
}

#[test]
fn the_chart_is_an_svg_with_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("surge.svg");
    let out = steward(&[
        "--csv",
        &data("surge.csv"),
        "--size",
        "2",
        "--baseline",
        "all",
        "--chart",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg")
            && text.contains("steward")
            && text.contains("hpa")
            && text.contains("naive")
    );
}

#[test]
fn a_recording_runs_every_knob() {
    let out = steward(&[
        "--jsonl",
        &data("recording.jsonl"),
        "--baseline",
        "hpa",
        "--format",
        "json",
    ]);
    let v = json_of(&out);
    for knob in [
        "database.cpu",
        "database.memory",
        "database.disk",
        "database.replicas",
        "balancer.cpu",
    ] {
        assert!(
            v["summary"][knob]["steward"]["changes"].is_number(),
            "{knob} in {v}"
        );
    }
    assert!(v["summary"]["database.cpu"]["hpa"]["changes"].is_number());
    assert_eq!(v["input"]["samples"], 240);
}

#[test]
fn text_output_has_a_timeline_and_a_table() {
    let out = steward(&[
        "--csv",
        &data("surge.csv"),
        "--size",
        "2",
        "--baseline",
        "all",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("timeline (") && text.contains("database.cpu"),
        "{text}"
    );
    for policy in ["steward", "hpa", "naive"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(policy)),
            "{policy}: {text}"
        );
    }
}
