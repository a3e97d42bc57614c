//! A CSV trace (`steward evaluate --csv`): the reader over any bytes, then the whole command
//! (reader, replay through Steward's policies and both baselines, JSON report, SVG chart) on
//! the same bytes as a file.
//!
//! Invariants: nothing panics; a JSON report is valid JSON.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steward::evaluate::input::read_csv;

fuzz_target!(|data: &[u8]| {
    let _ = read_csv(data, "fuzz.csv", false);
    let Ok(series) = read_csv(data, "fuzz.csv", true) else {
        return;
    };
    if series.samples.is_empty() {
        return;
    }

    static PATHS: OnceLock<(String, String)> = OnceLock::new();
    let (path, chart) = PATHS.get_or_init(|| {
        let dir = steward_fuzz::scratch_dir("csv");
        let path = dir.join("trace.csv").display().to_string();
        (path, dir.join("chart.svg").display().to_string())
    });
    std::fs::write(path, data).expect("write the trace");
    for args in [
        &[
            "--csv",
            path,
            "--skip-bad",
            "--size",
            "2",
            "--values",
            "percent",
            "--baseline",
            "all",
            "--timeline",
            "all",
            "--format",
            "json",
            "--chart",
            chart,
        ][..],
        &[
            "--csv",
            path,
            "--skip-bad",
            "--resource",
            "disk",
            "--size",
            "10GiB",
            "--values",
            "cumulative",
            "--format",
            "json",
        ][..],
    ] {
        if let Ok(report) = steward_fuzz::evaluate(args) {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&report) {
                panic!("the JSON report is not JSON: {e}");
            }
        }
    }
});
