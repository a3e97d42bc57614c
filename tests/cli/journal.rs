//! The operation journal (promise 7): durable writes, recovery after a crash at each point of
//! a write, unreadable files set aside and reported, ids monotonic per cluster.
//!
//! A crash is simulated by leaving the state directory exactly as the write sequence (temp
//! file, fsync, record -> `.prev`, temp -> record, fsync dir) would leave it when the process
//! dies between two of those steps, then opening the journal as a restarted steward would.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;
use steward_model::Timestamp;
use steward_runtime::journal::{
    Journal, NewOperation, Operation, OperationKind, OperationState, FORMAT_VERSION,
};

const T0: i64 = 1_764_176_570_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn replace(cluster: &str, member: &str) -> NewOperation {
    NewOperation {
        kind: OperationKind::Replace,
        cluster: cluster.into(),
        targets: vec![member.into()],
        plan: json!({"steps": ["drain", "stop", "create", "verify", "remove"]}),
    }
}

fn active(dir: &Path) -> PathBuf {
    dir.join("active")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn record_path(dir: &Path, op: &Operation) -> PathBuf {
    active(dir).join(format!("{}.{}.json", op.cluster, op.id))
}

#[test]
fn an_operation_is_written_before_it_starts_updated_per_step_and_archived_when_finished() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Journal::open(dir.path(), 10).unwrap();
    assert!(opened.unfinished.is_empty() && opened.corrupt.is_empty());
    let mut journal = opened.journal;

    let mut op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    assert_eq!(op.state, OperationState::Started);
    assert_eq!(op.format, FORMAT_VERSION);
    // Durable before the first step: a restart right now sees it.
    let seen = Journal::open(dir.path(), 10).unwrap().unfinished;
    assert_eq!(seen, vec![op.clone()]);

    journal.step_done(&mut op, 0, at(5)).unwrap();
    journal.step_done(&mut op, 1, at(9)).unwrap();
    let seen = Journal::open(dir.path(), 10).unwrap().unfinished;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].state, OperationState::StepDone { step: 1 });
    assert_eq!(seen[0].next_step, 2);
    assert_eq!(seen[0].updated_at, at(9));
    assert_eq!(seen[0].started_at, at(0));
    assert_eq!(seen[0].revision, 3);
    assert_eq!(seen[0].plan, op.plan);

    journal.finish(&mut op, at(20)).unwrap();
    assert_eq!(op.state, OperationState::Finished);
    let reopened = Journal::open(dir.path(), 10).unwrap();
    assert!(reopened.unfinished.is_empty());
    let archived = reopened.journal.archived("pg").unwrap();
    assert_eq!(archived, vec![op.clone()]);
    // Nothing is left behind in `active`, not even the `.prev` copy.
    assert!(
        names(&active(dir.path())).is_empty(),
        "{:?}",
        names(&active(dir.path()))
    );
    // A finished operation cannot move again.
    assert!(journal.step_done(&mut op, 2, at(21)).is_err());
}

#[test]
fn a_failed_operation_stays_unfinished_until_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let mut op = journal.begin(replace("pg", "pg-3"), at(0)).unwrap();
    journal.step_done(&mut op, 0, at(1)).unwrap();
    journal
        .fail(&mut op, 1, "platform refused the stop", at(2))
        .unwrap();
    let seen = Journal::open(dir.path(), 10).unwrap().unfinished;
    assert_eq!(
        seen[0].state,
        OperationState::Failed {
            step: 1,
            reason: "platform refused the stop".into()
        }
    );
    journal.rolled_back(&mut op, at(3)).unwrap();
    let reopened = Journal::open(dir.path(), 10).unwrap();
    assert!(reopened.unfinished.is_empty());
    assert_eq!(
        reopened.journal.archived("pg").unwrap()[0].state,
        OperationState::RolledBack
    );
}

#[test]
fn a_leftover_temp_file_is_discarded_and_the_last_committed_record_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let mut op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    journal.step_done(&mut op, 0, at(1)).unwrap();
    // Crash while writing step 1: the temp file holds part of the new record.
    let full = fs::read(record_path(dir.path(), &op)).unwrap();
    let tmp = active(dir.path()).join(format!(".pg.{}.json.tmp", op.id));
    fs::write(&tmp, &full[..full.len() / 2]).unwrap();

    let opened = Journal::open(dir.path(), 10).unwrap();
    assert_eq!(opened.unfinished, vec![op.clone()]);
    assert!(opened.corrupt.is_empty());
    assert!(!tmp.exists(), "the interrupted write is cleaned up");
}

#[test]
fn a_crash_during_begin_leaves_no_operation() {
    let dir = tempfile::tempdir().unwrap();
    Journal::open(dir.path(), 10).unwrap();
    // The temp file of a first write, never renamed: the operation never started.
    let tmp = active(dir.path()).join(".pg.20251126T170250000Z-0000000001.json.tmp");
    fs::write(&tmp, b"{\"format\":1,\"id\":\"2025").unwrap();
    let opened = Journal::open(dir.path(), 10).unwrap();
    assert!(opened.unfinished.is_empty());
    assert!(opened.corrupt.is_empty());
    assert!(!tmp.exists());
}

#[test]
fn a_crash_between_the_two_renames_recovers_the_previous_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let mut op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    let committed = op.clone();
    journal.step_done(&mut op, 0, at(1)).unwrap();
    // Rebuild the state after "record -> .prev" and before "temp -> record": the step-0
    // record is only in the temp file (never committed), the Started one is `.prev`.
    let record = record_path(dir.path(), &op);
    let prev = active(dir.path()).join(format!("pg.{}.json.prev", op.id));
    let tmp = active(dir.path()).join(format!(".pg.{}.json.tmp", op.id));
    fs::rename(&record, &tmp).unwrap();
    assert!(prev.exists());

    let opened = Journal::open(dir.path(), 10).unwrap();
    assert_eq!(opened.unfinished, vec![committed]);
    assert!(record.exists() && !tmp.exists());
}

#[test]
fn a_truncated_record_falls_back_to_the_previous_one_at_every_cut() {
    // Build the two records once, then replay every possible truncation of the newer one.
    let src = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(src.path(), 10).unwrap().journal;
    let mut op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    let started = op.clone();
    journal.step_done(&mut op, 0, at(1)).unwrap();
    let full = fs::read(record_path(src.path(), &op)).unwrap();
    let prev = fs::read(active(src.path()).join(format!("pg.{}.json.prev", op.id))).unwrap();
    let json_len = full.len() - 1; // the record ends with a newline

    for cut in 0..full.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(active(dir.path())).unwrap();
        fs::write(record_path(dir.path(), &op), &full[..cut]).unwrap();
        fs::write(
            active(dir.path()).join(format!("pg.{}.json.prev", op.id)),
            &prev,
        )
        .unwrap();
        let opened = Journal::open(dir.path(), 10).unwrap();
        if cut >= json_len {
            assert_eq!(opened.unfinished, vec![op.clone()], "cut {cut}");
            assert!(opened.corrupt.is_empty(), "cut {cut}");
            continue;
        }
        assert_eq!(opened.unfinished, vec![started.clone()], "cut {cut}");
        assert_eq!(opened.corrupt.len(), 1, "cut {cut}");
        let bad = &opened.corrupt[0];
        assert!(bad.recovered_previous);
        assert!(
            bad.quarantined.exists(),
            "cut {cut}: the damaged bytes are kept"
        );
        assert_eq!(fs::read(&bad.quarantined).unwrap(), &full[..cut]);
        let message = bad.error.as_ref().unwrap().to_string();
        assert!(message.contains(&format!("pg.{}.json", op.id)), "{message}");
    }
}

#[test]
fn an_unreadable_record_without_a_fallback_is_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(active(dir.path())).unwrap();
    let path = active(dir.path()).join("pg.20251126T170250000Z-0000000001.json");
    fs::write(&path, b"{\"format\": 1, \"id\": \"20251126T17").unwrap();

    let opened = Journal::open(dir.path(), 10).unwrap();
    assert!(opened.unfinished.is_empty());
    assert_eq!(opened.corrupt.len(), 1);
    let bad = &opened.corrupt[0];
    assert!(!bad.recovered_previous);
    assert!(bad.quarantined.to_string_lossy().ends_with(".json.corrupt"));
    let message = bad.error.as_ref().unwrap().to_string();
    assert!(
        message.contains("pg.20251126T170250000Z-0000000001.json"),
        "{message}"
    );
    assert!(message.contains("corrupt or truncated"), "{message}");

    // A later start still reports it: it stays until a person removes it.
    let again = Journal::open(dir.path(), 10).unwrap();
    assert_eq!(again.corrupt.len(), 1);
    assert_eq!(again.corrupt[0].quarantined, bad.quarantined);
}

#[test]
fn a_record_of_another_format_version_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    let path = record_path(dir.path(), &op);
    let mut value: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    value["format"] = json!(FORMAT_VERSION + 1);
    fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
    let opened = Journal::open(dir.path(), 10).unwrap();
    assert!(opened.unfinished.is_empty());
    let message = opened.corrupt[0].error.as_ref().unwrap().to_string();
    assert!(message.contains("format version 2"), "{message}");
}

#[test]
fn a_crash_before_archiving_a_finished_operation_is_completed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    // The record was rewritten as Finished, then the process died before the move.
    let mut finished = op.clone();
    finished.state = OperationState::Finished;
    fs::write(
        record_path(dir.path(), &op),
        serde_json::to_vec(&finished).unwrap(),
    )
    .unwrap();

    let opened = Journal::open(dir.path(), 10).unwrap();
    assert!(opened.unfinished.is_empty());
    assert_eq!(opened.journal.archived("pg").unwrap(), vec![finished]);
    assert!(!record_path(dir.path(), &op).exists());
}

#[test]
fn ids_are_unique_and_monotonic_per_cluster_even_when_the_clock_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 1).unwrap().journal;
    let mut ids = Vec::new();
    for t in [10, 10, 5, 11] {
        let mut op = journal.begin(replace("pg", "pg-2"), at(t)).unwrap();
        ids.push(op.id.clone());
        journal.finish(&mut op, at(t)).unwrap();
    }
    // Another cluster has its own sequence; it does not disturb this one.
    journal.begin(replace("other", "o-1"), at(0)).unwrap();
    drop(journal);
    // After a restart (only one archived record kept), the next id is still later.
    let mut journal = Journal::open(dir.path(), 1).unwrap().journal;
    ids.push(journal.begin(replace("pg", "pg-2"), at(0)).unwrap().id);
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        assert!(pair[0].parts().unwrap() < pair[1].parts().unwrap());
    }
    assert!(ids.iter().all(|id| id.as_str().len() <= 63
        && id
            .as_str()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')));
}

#[test]
fn archived_operations_are_pruned_per_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 2).unwrap().journal;
    let mut done = Vec::new();
    for t in 0..5 {
        let mut op = journal.begin(replace("pg", "pg-2"), at(t)).unwrap();
        journal.finish(&mut op, at(t)).unwrap();
        done.push(op);
    }
    let mut other = journal.begin(replace("other", "o-1"), at(0)).unwrap();
    journal.finish(&mut other, at(0)).unwrap();
    assert_eq!(journal.archived("pg").unwrap(), done[3..].to_vec());
    assert_eq!(journal.archived("other").unwrap(), vec![other]);
}

#[test]
fn a_cluster_name_that_cannot_name_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 2).unwrap().journal;
    let err = journal.begin(replace("../etc", "x"), at(0)).unwrap_err();
    assert!(err.to_string().contains("../etc"), "{err}");
    assert!(names(&active(dir.path())).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever bytes sit in a record, its `.prev` or a temp file, `open` neither panics nor
    /// loses track of them: each record is either read or reported as corrupt.
    #[test]
    fn arbitrary_bytes_never_panic_and_are_never_silently_dropped(
        record in proptest::collection::vec(any::<u8>(), 0..512),
        prev in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512)),
        tmp in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(active(dir.path())).unwrap();
        let stem = "pg.20251126T170250000Z-0000000001";
        fs::write(active(dir.path()).join(format!("{stem}.json")), &record).unwrap();
        if let Some(prev) = &prev {
            fs::write(active(dir.path()).join(format!("{stem}.json.prev")), prev).unwrap();
        }
        fs::write(active(dir.path()).join(format!(".{stem}.json.tmp")), &tmp).unwrap();
        let opened = Journal::open(dir.path(), 10).unwrap();
        prop_assert!(opened.unfinished.len() + opened.corrupt.len() >= 1);
        for bad in &opened.corrupt {
            prop_assert!(bad.quarantined.exists());
        }
    }
}

#[test]
fn a_record_copied_under_another_name_is_set_aside_not_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 10).unwrap().journal;
    let op = journal.begin(replace("pg", "pg-2"), at(0)).unwrap();
    let copy = active(dir.path()).join("pg.20991231T000000000Z-0000000009.json");
    fs::copy(record_path(dir.path(), &op), &copy).unwrap();
    let opened = Journal::open(dir.path(), 10).unwrap();
    assert_eq!(opened.unfinished, vec![op]);
    assert_eq!(opened.corrupt.len(), 1);
    let message = opened.corrupt[0].error.as_ref().unwrap().to_string();
    assert!(message.contains("not the one its name says"), "{message}");
    assert!(!copy.exists());
}
