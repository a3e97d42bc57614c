//! `steward run` as a user runs it: the simulated example, in a dry run that stops by itself,
//! prints readable decisions of both loops and touches nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The scripted scenario of examples/simulated.toml (load rises at 15 s, pg-3 crashes at 45 s):
/// in two simulated minutes the scaler proposes a CPU grow and the repairer would drain pg-3,
/// each with its reason; nothing is executed and no state is written.
#[test]
fn a_dry_run_of_the_simulated_example_prints_both_loops_decisions() {
    let state = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("examples/simulated.toml")).unwrap();
    let text = text.replace(
        "state_dir = \"/tmp/steward-demo\"",
        &format!("state_dir = {:?}", state.path().join("state")),
    );
    let text = text.replace(
        "trace = \"traces/",
        &format!("trace = \"{}/", repo("examples/traces").display()),
    );
    let config = state.path().join("simulated.toml");
    std::fs::write(&config, text).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--dry-run", "--for", "2m", "--config"])
        .arg(&config)
        .output()
        .expect("the steward binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("dry run"), "{stdout}");
    let grow = lines
        .iter()
        .find(|l| l.contains(" scale ") && l.contains("propose"))
        .unwrap_or_else(|| panic!("no scaling proposal:\n{stdout}"));
    assert!(grow.contains("database cpu 2.00 -> 3.00 vCPU"), "{grow}");
    assert!(grow.contains("above high"), "the reason is shown: {grow}");
    let drain = lines
        .iter()
        .find(|l| l.contains(" repair ") && l.contains("would run"))
        .unwrap_or_else(|| panic!("no repair command:\n{stdout}"));
    assert!(drain.contains("drain pg-3"), "{drain}");
    assert!(drain.contains("Exited"), "the evidence is shown: {drain}");
    // Nothing ran, so nothing came back and nothing was journaled.
    assert!(!stdout.contains(" result "), "{stdout}");
    assert!(
        !state.path().join("state").exists(),
        "a dry run writes no state"
    );
}
