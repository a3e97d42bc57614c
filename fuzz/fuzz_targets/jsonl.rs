//! A JSON-lines recording (`steward evaluate --jsonl`, `steward observe --record`'s format):
//! the reader over any bytes, then the whole command (every knob replayed through the
//! policies, text and JSON reports, SVG chart) on the same bytes as a file.
//!
//! Invariants: nothing panics; a JSON report is valid JSON.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steward::evaluate::input::read_jsonl;

fuzz_target!(|data: &[u8]| {
    let _ = read_jsonl(data, "fuzz.jsonl", false);
    if read_jsonl(data, "fuzz.jsonl", true).is_err() {
        return;
    }

    static PATHS: OnceLock<(String, String)> = OnceLock::new();
    let (path, chart) = PATHS.get_or_init(|| {
        let dir = steward_fuzz::scratch_dir("jsonl");
        let path = dir.join("recording.jsonl").display().to_string();
        (path, dir.join("chart.svg").display().to_string())
    });
    std::fs::write(path, data).expect("write the recording");
    let _ = steward_fuzz::evaluate(&[
        "--jsonl",
        path,
        "--skip-bad",
        "--format",
        "text",
        "--chart",
        chart,
    ]);
    if let Ok(report) = steward_fuzz::evaluate(&[
        "--jsonl",
        path,
        "--skip-bad",
        "--baseline",
        "all",
        "--timeline",
        "all",
        "--format",
        "json",
    ]) {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&report) {
            panic!("the JSON report is not JSON: {e}");
        }
    }
});
