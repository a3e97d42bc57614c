//! The recorded scenarios: `tests/data/scenarios/<name>.jsonl` (the recording format, one
//! `MemberRecord` per line) drives the repair core; `<name>.expect` is the transcript it must
//! produce. Every command is acknowledged as successful at the time it was issued, as a perfect
//! platform would. Transcript lines are `<time> <command>`; `#` lines and blank lines in the
//! expect file are comments.
//!
//! Every `.jsonl` in the folder must have its `.expect`, so an incident recorded live becomes a
//! regression test by dropping two files there.

use std::path::{Path, PathBuf};

use steward_model::record::MemberRecord;
use steward_repairer::{replay, Event, RepairConfig};

use crate::support::{Driver, CLUSTER};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/scenarios")
}

/// Runs one scenario and returns its transcript.
fn transcript(jsonl: &str) -> Vec<String> {
    let records: Vec<MemberRecord> = jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect();
    let mut d = Driver::new(RepairConfig::default());
    let mut lines = Vec::new();
    for observation in replay::observations(records, CLUSTER) {
        let at = observation.at;
        let mut out = d.handle(Event::Observed(observation), at);
        out.extend(d.ack_all(at));
        lines.extend(out.iter().map(|c| format!("{at} {}", c.kind)));
    }
    lines
}

fn expected(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn check(name: &str) {
    let dir = folder();
    let jsonl = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
    let expect = std::fs::read_to_string(dir.join(format!("{name}.expect")))
        .unwrap_or_else(|e| panic!("{name}.expect: {e}"));
    assert_eq!(transcript(&jsonl), expected(&expect), "scenario {name}");
}

/// A replica crashes: after the grace window it is drained, fenced and replaced; its data goes
/// only once the replacement streams.
#[test]
fn replica_crash() {
    check("replica-crash");
}

/// The primary freezes and a replica is promoted: the former primary is fenced at once,
/// before anything else (promise 10).
#[test]
fn frozen_primary_and_promotion() {
    check("frozen-primary");
}

/// Every recorded scenario in the folder has a transcript and matches it (including ones added
/// later without a test of their own).
#[test]
fn every_scenario_in_the_folder_matches_its_transcript() {
    let mut names: Vec<String> = std::fs::read_dir(folder())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "jsonl").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    for name in names {
        check(&name);
    }
}
