//! The operation journal's records, as a crash or a damaged disk may leave them: up to three
//! NUL-separated files (an active record, its `.prev`, an archived record) are put in a fresh
//! state directory, which `steward run` then opens as it does at start-up: the journal reads
//! (and quarantines or restores) every record, the loops' view decodes the entries, the
//! pending operations are worked out and resumed into a scaler and a repairer (one tick each),
//! and every operation found is ended (rewritten and archived).
//!
//! A file is named after the `cluster` and `id` its own JSON holds when those make a file name
//! (a harness shortcut, so that a well-formed record is not always misnamed).
//!
//! Invariant: nothing panics.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steward_coordinator::Coordinator;
use steward_model::Timestamp;
use steward_repairer::Repairer;
use steward_runtime::config::{Config, RawConfig};
use steward_runtime::journal::Operation;
use steward_runtime::run::journal::{recovery, Entry, LoopJournal, Pending, StateJournal};
use steward_scaler::Scaler;

const CLUSTER: &str = "demo";
const STEM: &str = "demo.20261126T100000000Z-0000000001";

/// `<cluster>.<id>` from the record itself, when it makes a plain file name.
fn stem_of(part: &[u8]) -> String {
    let named = serde_json::from_slice::<serde_json::Value>(part)
        .ok()
        .and_then(|v| {
            let cluster = v.get("cluster")?.as_str()?.to_string();
            let id = v.get("id")?.as_str()?.to_string();
            Some(format!("{cluster}.{id}"))
        })
        .filter(|s| s.len() < 200 && !s.contains(['/', '\0']) && !s.starts_with('.'));
    named.unwrap_or_else(|| STEM.to_string())
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        RawConfig::default()
            .validate()
            .expect("the defaults validate")
    })
}

fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["active", "archive"] {
        std::fs::create_dir_all(dir.join(sub)).expect("journal directories");
    }
}

fuzz_target!(|data: &[u8]| {
    // The decoders alone.
    let _ = serde_json::from_slice::<Operation>(data).map(|op| op.id.parts());
    let _ = serde_json::from_slice::<Entry>(data);

    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| steward_fuzz::scratch_dir("journal").join("state"));
    fresh_dir(dir);
    let [record, prev, archived]: [&[u8]; 3] = steward_fuzz::parts(data, 3)
        .try_into()
        .expect("three parts");
    let stem = stem_of(record);
    std::fs::write(dir.join("active").join(format!("{stem}.json")), record).expect("write");
    if !prev.is_empty() {
        std::fs::write(dir.join("active").join(format!("{stem}.json.prev")), prev).expect("write");
    }
    if !archived.is_empty() {
        let stem = stem_of(archived);
        std::fs::write(dir.join("archive").join(format!("{stem}.json")), archived).expect("write");
    }

    let cluster = stem.split_once('.').map_or(CLUSTER, |(c, _)| c);
    let Ok(journal) = StateJournal::open(dir, cluster) else {
        return;
    };
    let _ = journal.recent_members();
    let entries = journal.read().expect("an opened journal reads");
    let pending = Pending::from_entries(&entries);
    for (_, by, work) in &pending.steps {
        let _ = recovery(*by, work);
    }

    // Resumed as `steward run` resumes them, then one tick of each loop.
    let now = Timestamp::from_secs(1_795_708_800);
    let config = config();
    let mut coordinator = Coordinator::new(config.repair.guards.clone());
    let mut repairer = Repairer::new(cluster, config.repair.clone());
    for repair in pending.repairs.clone() {
        let _ = repairer.resume(repair, now, &mut coordinator);
    }
    let _ = repairer.handle(steward_repairer::Event::Tick, now, &mut coordinator);
    let mut scaler = Scaler::new(config.scaler.clone());
    for plan in pending.plans.clone() {
        let _ = scaler.resume(plan, now);
    }
    let _ = scaler.handle(steward_scaler::Event::Tick, now);

    // Every operation found ends: its record is rewritten, archived and the archive pruned.
    for entry in &entries {
        let end = match entry {
            Entry::Begin { op, .. } => Entry::End {
                at: now,
                op: op.clone(),
                result: "ok".into(),
            },
            Entry::Plan { plan, .. } => Entry::PlanEnd {
                at: now,
                op: plan.id.0.clone(),
            },
            Entry::Repair { repair, .. } => Entry::RepairEnd {
                at: now,
                op: repair.id.to_string(),
                outcome: "finished".into(),
            },
            _ => continue,
        };
        let _ = journal.append(&end);
    }
});
