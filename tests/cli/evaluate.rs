//! `steward evaluate` as a user runs it: the acceptance interface, errors, chart, recordings,
//! and a history read from a (local, in-test) Prometheus.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

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
    // The replica count's scorecard, against the HPA on replicas: the recorded CPU spread over
    // the count each holds, so the band minutes and slack are counted.
    let replicas = &v["summary"]["database.replicas"];
    for policy in ["steward", "hpa"] {
        let s = &replicas[policy];
        let minutes =
            s["minutes_above_high"].as_f64().unwrap() + s["minutes_below_low"].as_f64().unwrap();
        assert!(minutes > 0.0, "{policy}: {s}");
        assert!(s["slack"].as_f64().unwrap() > 1.0, "{policy}: {s}");
        assert!(s["changes_per_day"].is_number(), "{policy}: {s}");
    }
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

/// A scorecard: two CSV traces and a synthetic one, every baseline, one sum row per policy whose
/// figures are the traces' totals, and the plane drawn with a panel for the sum and each trace.
#[test]
fn a_scorecard_of_several_traces_has_a_sum_row_and_draws_the_plane() {
    let dir = tempfile::tempdir().unwrap();
    let plane = dir.path().join("plane.svg");
    let rds = root()
        .join("examples/traces/rds_cpu_utilization_cc0c53.csv")
        .display()
        .to_string();
    let args = |format: &'static str| {
        vec![
            "--csv".to_string(),
            rds.clone(),
            "--csv".to_string(),
            data("surge.csv"),
            "--synthetic".to_string(),
            "diurnal:1".to_string(),
            "--size".to_string(),
            "2".to_string(),
            "--baseline".to_string(),
            "all".to_string(),
            "--format".to_string(),
            format.to_string(),
            "--plane".to_string(),
            plane.display().to_string(),
        ]
    };
    let json_args = args("json");
    let v = json_of(&steward(
        &json_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let traces = v["traces"].as_array().expect("one report per trace");
    assert_eq!(traces.len(), 3, "{v}");
    assert_eq!(v["sum_of"], 3);
    assert_eq!(traces[2]["input"]["file"], "synthetic:diurnal:1");
    for policy in ["steward", "hpa", "vpa", "naive", "fixed"] {
        let each = |figure: &str| -> f64 {
            traces
                .iter()
                .map(|t| t["summary"][policy][figure].as_f64().unwrap())
                .sum()
        };
        let sum = &v["summary"][policy];
        for figure in [
            "changes",
            "direction_changes",
            "minutes_above_high",
            "minutes_below_low",
            "resource_hours",
            "used_hours",
        ] {
            let total = sum[figure].as_f64().unwrap();
            assert!(
                (total - each(figure)).abs() <= 1e-6 * total.max(1.0),
                "{policy}.{figure}: {total} vs {}",
                each(figure)
            );
        }
        let slack = sum["resource_hours"].as_f64().unwrap() / sum["used_hours"].as_f64().unwrap();
        assert!(
            (sum["slack"].as_f64().unwrap() - slack).abs() < 1e-9,
            "{policy}"
        );
        assert!(sum["changes_per_day"].is_number(), "{policy}");
    }
    // The floor makes at most one change per trace.
    assert!(
        v["summary"]["fixed"]["changes"].as_u64().unwrap() <= 3,
        "{v}"
    );

    let out = steward(&args("text").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let sum_row = text
        .lines()
        .find(|l| l.trim_start().starts_with("sum of 3 traces"))
        .unwrap_or_else(|| panic!("no sum row: {text}"));
    assert!(sum_row.contains("steward"), "{sum_row}");
    for trace in ["rds_cpu_utilization_cc0c53", "surge", "synthetic:diurnal:1"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(trace)),
            "{trace}: {text}"
        );
    }
    assert!(
        text.contains("slack") && text.contains("changes/day"),
        "{text}"
    );
    assert!(
        !text.contains("timeline of"),
        "several traces: no timeline unless asked"
    );

    let svg = std::fs::read_to_string(&plane).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    for label in [
        "sum of 3 traces",
        "rds_cpu_utilization_cc0c53",
        "synthetic:diurnal:1",
        "point area = changes",
    ] {
        assert!(svg.contains(label), "{label} in the plane");
    }
    // Five policies on four panels (the sum and three traces), and five legend dots.
    assert_eq!(svg.matches("<circle").count(), 5 * 4 + 5);
}

/// `--write-synthetic` writes the NAB-style CSV that `--synthetic` replays: read back with
/// --csv, it scores the same.
#[test]
fn a_synthetic_trace_written_out_replays_like_the_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let generated = json_of(&steward(&[
        "--synthetic",
        "bursts:2",
        "--write-synthetic",
        dir.path().to_str().unwrap(),
        "--size",
        "2",
        "--baseline",
        "all",
        "--format",
        "json",
    ]));
    let csv = dir.path().join("bursts-2.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("timestamp,value\n2026-01-05 00:00:00,"),
        "{}",
        &text[..60]
    );
    let replayed = json_of(&steward(&[
        "--csv",
        csv.to_str().unwrap(),
        "--size",
        "2",
        "--baseline",
        "all",
        "--format",
        "json",
    ]));
    assert_eq!(generated["summary"], replayed["summary"]);
    assert_eq!(replayed["input"]["samples"], 4032);
}

/// Whole-cluster recordings: `--synthetic-cluster` makes a scorecard of recordings (every knob,
/// the replica count against the HPA on replicas, a sum over them), and what `--write-synthetic`
/// writes is a recording that `--jsonl` (given its folder) replays to the same figures.
#[test]
fn synthetic_cluster_recordings_make_a_scorecard_that_their_files_replay_alike() {
    let dir = tempfile::tempdir().unwrap();
    let generated = json_of(&steward(&[
        "--synthetic-cluster",
        "diurnal:1-2",
        "--write-synthetic",
        dir.path().to_str().unwrap(),
        "--baseline",
        "hpa",
        "--format",
        "json",
    ]));
    assert_eq!(generated["sum_of"], 2);
    let traces = generated["traces"].as_array().unwrap();
    assert_eq!(traces[1]["input"]["file"], "synthetic-cluster:diurnal:2");
    assert_eq!(traces[1]["input"]["samples"], 4032);
    let replicas = &generated["summary"]["database.replicas"];
    for policy in ["steward", "hpa"] {
        let sum = replicas[policy]["changes"].as_f64().unwrap();
        let each: f64 = traces
            .iter()
            .map(|t| {
                t["summary"]["database.replicas"][policy]["changes"]
                    .as_f64()
                    .unwrap()
            })
            .sum();
        assert_eq!(sum, each, "{policy}");
        assert!(sum > 0.0, "a diurnal load moves the count: {replicas}");
        assert!(replicas[policy]["resource_hours"].as_f64().unwrap() > 0.0);
    }
    for knob in [
        "database.cpu",
        "database.memory",
        "database.disk",
        "balancer.cpu",
    ] {
        assert!(
            generated["summary"][knob]["steward"]["changes"].is_number(),
            "{knob}"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["diurnal-1.jsonl", "diurnal-2.jsonl"]);
    let replayed = json_of(&steward(&[
        "--jsonl",
        dir.path().to_str().unwrap(),
        "--baseline",
        "hpa",
        "--format",
        "json",
    ]));
    assert_eq!(generated["summary"], replayed["summary"]);
}

/// An OOM kill in a recording is replayed as Steward's emergency grow, at once and said so.
#[test]
fn an_oom_kill_in_a_recording_is_an_emergency_grow_in_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oom.jsonl");
    let mut text = String::new();
    for minute in 0..40 {
        let kills = if minute >= 20 { 1 } else { 0 };
        for (member, role) in [("pg-1", "leader"), ("pg-2", "replica"), ("pg-3", "replica")] {
            text.push_str(&format!(
                concat!(
                    r#"{{"time":"2026-11-26T10:{:02}:00Z","member":"{}","role":"database","#,
                    r#""patroni_role":"{}","cpu_used":1.0,"memory_used":2576980377.6,"#,
                    r#""oom_kills":{},"size":{{"cpus":2.0,"memory_bytes":4294967296,"disk_bytes":0}}}}"#,
                    "\n"
                ),
                minute,
                member,
                role,
                if member == "pg-2" { kills } else { 0 }
            ));
        }
    }
    std::fs::write(&path, text).unwrap();
    let v = json_of(&steward(&[
        "--jsonl",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let memory: Vec<&Value> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["knob"] == "database.memory")
        .collect();
    assert_eq!(memory.len(), 1, "{memory:?}");
    assert_eq!(memory[0]["at"], "2026-11-26T10:20:00Z");
    assert_eq!(memory[0]["action"], "grow");
    let reason = memory[0]["reason"].as_str().unwrap();
    assert!(reason.contains("OOM kill: emergency grow"), "{reason}");
}

#[test]
fn scorecard_flags_fail_with_clear_errors() {
    let err = |args: &[&str]| {
        let out = steward(args);
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["--synthetic", "sine:1", "--size", "2"]);
    assert!(
        e.contains("unknown kind `sine`") && e.contains("diurnal"),
        "{e}"
    );
    let e = err(&["--synthetic", "noise:3-1", "--size", "2"]);
    assert!(e.contains("empty seed range"), "{e}");
    let e = err(&["--size", "2"]);
    assert!(e.contains("--csv") && e.contains("--synthetic"), "{e}");
    let e = err(&[
        "--synthetic",
        "noise:1-2",
        "--size",
        "2",
        "--chart",
        "x.svg",
    ]);
    assert!(e.contains("use --plane"), "{e}");
    let e = err(&[
        "--jsonl",
        &data("recording.jsonl"),
        "--synthetic",
        "noise:1",
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = err(&[
        "--synthetic-cluster",
        "noise:1",
        "--csv",
        &data("surge.csv"),
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = err(&["--synthetic-cluster", "noise:1-2", "--chart", "x.svg"]);
    assert!(e.contains("use --plane"), "{e}");
    let e = err(&[
        "--jsonl",
        &data("recording.jsonl"),
        "--write-synthetic",
        "x",
    ]);
    assert!(e.contains("--synthetic"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = err(&["--csv", empty.path().to_str().unwrap(), "--size", "2"]);
    assert!(e.contains("holds no .csv file"), "{e}");
    let e = err(&["--jsonl", empty.path().to_str().unwrap()]);
    assert!(e.contains("holds no .jsonl file"), "{e}");
}

/// A Prometheus on loopback for `--prometheus`: answers range queries from the files under
/// tests/data/evaluate/prometheus/, chosen by what the (decoded) query asks for, and keeps each
/// request's `Authorization` header. A plain thread and blocking sockets: the binary under test
/// is another process, so nothing here needs a runtime.
fn prometheus(route: fn(&str) -> &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let auth = Arc::new(Mutex::new(Vec::new()));
    let seen = auth.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut sock) = stream else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            let complete = |req: &[u8]| {
                let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                req.len() >= end + 4 + length
            };
            while !complete(&req) {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some(a) = text.lines().find_map(|l| {
                l.strip_prefix("authorization: ")
                    .or(l.strip_prefix("Authorization: "))
            }) {
                seen.lock().unwrap().push(a.trim().to_string());
            }
            let body =
                std::fs::read_to_string(data(&format!("prometheus/{}", route(&decoded(&text)))))
                    .unwrap_or_else(|_| {
                        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into()
                    });
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes());
        }
    });
    (base, auth)
}

/// The request, with its percent-encoding and `+` undone (good enough to find a metric name).
fn decoded(request: &str) -> String {
    let bytes = request.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("3f");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// One hour with a CPU surge on the leader (and NaN, +Inf and a gap on a replica); every
/// other metric answers empty.
fn surge_history(query: &str) -> &'static str {
    if query.contains("container_cpu_usage_seconds_total") {
        "handwritten.cpu_surge_nan.json"
    } else if query.contains("patroni_primary") {
        "handwritten.patroni_primary_1h.json"
    } else {
        "none: an empty answer"
    }
}

#[test]
fn a_prometheus_history_is_replayed_like_a_recording() {
    let (base, auth) = prometheus(surge_history);
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args([
            "evaluate",
            "--prometheus",
            &base,
            "--since",
            "1h",
            "--until",
            "2026-11-26T11:00:00Z",
            "--cpus",
            "2",
            "--prometheus-username",
            "reader",
            "--prometheus-password-env",
            "STEWARD_TEST_PROMETHEUS_PASSWORD",
            "--format",
            "json",
            "--timeline",
            "all",
            "--log",
            "debug",
        ])
        .env("STEWARD_TEST_PROMETHEUS_PASSWORD", "hunter2-in-env")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = json_of(&out);
    assert_eq!(v["input"]["format"], "prometheus", "{v}");
    assert_eq!(v["input"]["file"], base.as_str());
    assert_eq!(v["input"]["samples"], 241, "1 hour at 15 s: {v}");
    // The leader's surge (1.9 of 2 vCPU for 25 minutes) grows database.cpu, during the surge.
    let timeline = v["timeline"].as_array().unwrap();
    let grow = timeline
        .iter()
        .find(|c| c["knob"] == "database.cpu" && c["policy"] == "steward" && c["action"] == "grow")
        .unwrap_or_else(|| panic!("no grow in {timeline:?}"));
    let at = grow["at"].as_str().unwrap();
    assert!(
        ("2026-11-26T10:20:00Z".."2026-11-26T10:45:00Z").contains(&at),
        "{grow}"
    );
    // No memory or disk size given: those knobs are not replayed; the replica count is.
    assert!(v["summary"].get("database.memory").is_none(), "{v}");
    assert!(
        v["summary"]["database.replicas"]["steward"]["changes"].is_number(),
        "{v}"
    );
    // Basic auth reached Prometheus on every query; the secret never reached the output.
    let auth = auth.lock().unwrap();
    let queries = steward_adapters::prometheus::PrometheusSettings::with_url(&base)
        .unwrap()
        .queries
        .keys()
        .filter(|m| m.is_per_member())
        .count();
    assert_eq!(
        auth.len(),
        queries + 1,
        "one range query per default metric, and the leader query: {auth:?}"
    );
    assert!(
        auth.iter()
            .all(|a| a == "Basic cmVhZGVyOmh1bnRlcjItaW4tZW52"),
        "base64 of reader:hunter2-in-env: {auth:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains("hunter2") && !stdout.contains("hunter2"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_prometheus_is_an_error_not_an_empty_history() {
    // Bound, then released: nothing listens there (on an address no other test binds, so a
    // test's server beside this one cannot be given the port a moment later).
    let port = TcpListener::bind("127.0.255.254:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = steward(&[
        "--prometheus",
        &format!("http://127.0.255.254:{port}"),
        "--since",
        "1h",
        "--cpus",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("every prometheus query failed"),
        "{err}"
    );
    let out = steward(&["--prometheus", "http://127.0.0.1:9", "--step", "1500ms"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("whole seconds"),
        "{err}"
    );
    // Credentials belong in --prometheus-password-env, and a URL holding one is not echoed.
    let out = steward(&["--prometheus", "http://reader:hunter2@127.0.0.1:9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("credentials in the URL are not allowed")
            && !err.contains("hunter2"),
        "{err}"
    );
}

/// Logs into a file or a pipe (as here: `output()` pipes stderr) carry no ANSI colour codes unless
/// `--color always` asks for them; `--color never` and `NO_COLOR` keep them off.
#[test]
fn logs_are_coloured_only_when_asked_or_on_a_terminal() {
    let trace = root()
        .join("examples/traces/rds_cpu_utilization_cc0c53.csv")
        .display()
        .to_string();
    let run = |extra: &[&str], no_color: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
        cmd.args(["--log", "info"]).args(extra);
        cmd.args([
            "evaluate", "--csv", &trace, "--size", "2", "--format", "json",
        ]);
        cmd.env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().expect("the binary runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert!(
            stderr.contains("input read"),
            "the info line is logged: {stderr}"
        );
        stderr.contains('\u{1b}')
    };
    assert!(!run(&[], false), "auto, stderr a pipe: plain text");
    assert!(!run(&["--color", "auto"], false));
    assert!(!run(&["--color", "never"], false));
    assert!(
        run(&["--color", "always"], false),
        "always: colour even into a pipe"
    );
    assert!(
        run(&["--color", "always"], true),
        "an explicit always beats NO_COLOR"
    );
    assert!(!run(&["--color", "auto"], true));
}
