//! Data-driven scenarios: every `tests/data/scaler/*.json` is a cluster, a load and the actions
//! expected, in order. An incident becomes a regression test by adding a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use steward_model::Size;
use steward_policies::PolicyConfig;
use steward_scaler::{Command, PlanOutcome};

use crate::world::{config, labels, live, restart_only, Harness, World};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the scenario shows, for people (printed when it fails).
    description: String,
    /// Database members pg-1..pg-n; pg-1 leads.
    members: usize,
    size: Size,
    /// `live` or `restart`.
    capabilities: String,
    /// CPU and memory in use, as shares of the size, on every database member.
    cpu_share: f64,
    memory_share: f64,
    /// Disk used as a share of the size, per member (default 30 %).
    #[serde(default)]
    disk_share: BTreeMap<String, f64>,
    max_observations: usize,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `completed` or `failed`.
    outcome: String,
    actions: Vec<String>,
    leader: String,
    /// Every command marked as an emergency (default false).
    #[serde(default)]
    emergency: bool,
}

fn check(path: &Path, s: Scenario) {
    let path = &format!("{} ({})", path.display(), s.description);
    let caps = match s.capabilities.as_str() {
        "live" => live(),
        "restart" => restart_only(),
        other => panic!("{path}: unknown capabilities `{other}`"),
    };
    let mut world = World::new(s.members, s.size, caps);
    world.load_databases(Some(s.cpu_share), Some(s.memory_share));
    for (member, share) in &s.disk_share {
        world.member_mut(member).disk_used = Some(share * s.size.disk_bytes as f64);
    }
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    let outcome = h.run_until_finished(s.max_observations);
    let outcome = match outcome {
        Some(PlanOutcome::Completed) => "completed",
        Some(PlanOutcome::Failed { .. }) => "failed",
        _ => "none",
    };
    assert_eq!(outcome, s.expect.outcome, "{path}");
    assert_eq!(labels(&h.commands), s.expect.actions, "{path}");
    assert_eq!(h.world.leader(), Some(s.expect.leader.as_str()), "{path}");
    for c in &h.commands {
        if let Command::Execute { emergency, .. } = c {
            assert_eq!(*emergency, s.expect.emergency, "{path}");
        }
    }
}

#[test]
fn every_scenario_file_holds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/scaler");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "scenarios in {}: {files:?}",
        dir.display()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable scenario");
        let scenario: Scenario =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&path, scenario);
    }
}
